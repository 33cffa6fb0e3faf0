//! The event pump against a local WebSocket server that speaks ARI's event protocol:
//! it authenticates by header (no secret in the URL), subscribes to nothing implicitly,
//! and reconnects by itself whenever the connection drops (asking first whether another
//! client serves the application: nobody does here).

// The handshake callback's error type is tungstenite's, fixed by its `Callback` trait.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use futures_util::SinkExt;
use pushwake_asterisk::{spawn_event_pump, AriEvent, EventFeed, EventsConfig};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

const EVENT: &str = r#"{"type":"ContactStatusChange","endpoint":{"technology":"PJSIP","resource":"101"},"contact_info":{"uri":"sip:101@127.0.0.1:5070","contact_status":"NonQualified","aor":"101"}}"#;

/// The next connection that asks for the event WebSocket. Anything else (the rival probe
/// the pump sends before every reconnect, `POST /ari/events/user/…`) is answered as
/// Asterisk answers it for an application nobody serves: 404.
async fn accept_events(listener: &TcpListener) -> tokio::net::TcpStream {
    loop {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 16];
        let n = stream.peek(&mut head).await.unwrap();
        if head[..n].starts_with(b"GET /ari/events") {
            return stream;
        }
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut request = vec![0u8; 4096];
        let _ = stream.read(&mut request).await;
        let body = r#"{"message":"Application not found"}"#;
        let reply = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
    }
}

async fn next(feed: &mut tokio::sync::mpsc::Receiver<EventFeed>) -> EventFeed {
    tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("feed stalled")
        .expect("feed ended")
}

#[tokio::test]
async fn reconnects_after_every_drop_and_authenticates_by_header() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Three connections: each gets one event and is then dropped (the last one stays).
        for round in 0..3 {
            let stream = accept_events(&listener).await;
            let seen = seen_tx.clone();
            let mut ws = tokio_tungstenite::accept_hdr_async(
                stream,
                move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
                    let auth = request
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    seen.send((request.uri().to_string(), auth)).unwrap();
                    Ok(response)
                },
            )
            .await
            .unwrap();
            ws.send(Message::Text(EVENT.into())).await.unwrap();
            // A frame that is not JSON must be skipped, not end the stream.
            ws.send(Message::Text("{oops".into())).await.unwrap();
            if round < 2 {
                drop(ws);
            } else {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    });

    let mut feed = spawn_event_pump(EventsConfig {
        url,
        username: "pushwake".into(),
        password: "s3cret".into(),
        app: "pushwake".into(),
    });
    for round in 0..3 {
        assert_eq!(next(&mut feed).await, EventFeed::Connected, "round {round}");
        match next(&mut feed).await {
            EventFeed::Event(event) => {
                assert!(matches!(*event, AriEvent::ContactStatusChange { .. }))
            }
            other => panic!("round {round}: {other:?}"),
        }
        if round < 2 {
            assert_eq!(
                next(&mut feed).await,
                EventFeed::Disconnected,
                "round {round}"
            );
        }
        let (uri, auth) = seen_rx.recv().await.unwrap();
        assert_eq!(uri, "/ari/events?app=pushwake");
        // Basic pushwake:s3cret
        assert_eq!(auth.as_deref(), Some("Basic cHVzaHdha2U6czNjcmV0"));
    }
}

#[tokio::test]
async fn keeps_trying_while_nothing_listens() {
    // Reserve a port, then close it: connections are refused until a server appears.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut feed = spawn_event_pump(EventsConfig {
        url: format!("http://127.0.0.1:{port}"),
        username: "u".into(),
        password: "p".into(),
        app: "a".into(),
    });
    // Several attempts fail (0.25 s, 0.5 s, 1 s, …) before the server starts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        let stream = accept_events(&listener).await;
        let _ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    assert_eq!(next(&mut feed).await, EventFeed::Connected);
}
