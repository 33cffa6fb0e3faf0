//! sipp processes: callers and phones, with the scenarios in `testkit/scenarios/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The scenario file `name` shipped with the testkit.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// A running sipp.
pub struct SippRun {
    name: String,
    child: Child,
    dir: tempfile::TempDir,
}

/// How a phone behaves when the INVITE comes.
#[derive(Clone, Copy, Debug)]
pub enum Phone {
    /// Answers after `answer_after_ms`, then waits for the BYE.
    Answer {
        /// Delay before 200 OK.
        answer_after_ms: u64,
    },
    /// Answers after `answer_after_ms`, talks `talk_ms`, sends BYE.
    AnswerThenBye {
        /// Delay before 200 OK.
        answer_after_ms: u64,
        /// Time before its BYE.
        talk_ms: u64,
    },
    /// Rings and never answers; expects a CANCEL.
    Ignore,
    /// Rings, then rejects with 486 Busy Here.
    Reject,
    /// A desk phone the dialplan's own `Dial()` rings (no `X-Pushwake-Call-Id`
    /// required): answers after `answer_after_ms`, then waits for the BYE.
    DeskAnswer {
        /// Delay before 200 OK.
        answer_after_ms: u64,
    },
    /// A desk phone that rings and never answers; expects a CANCEL.
    DeskIgnore,
    /// Takes one SIP MESSAGE and answers it with this status code (200, or 500);
    /// logs its From, Content-Type, `X-Pushwake-Message-Id` and body
    /// ([`SippRun::logged`]).
    TakesMessage {
        /// The status of its answer: 500, or else 200.
        answer: u16,
    },
}

/// How the caller's call must end.
#[derive(Clone, Copy, Debug)]
pub enum CallerEnd {
    /// Answered; the far end hangs up.
    AnsweredFarHangsUp,
    /// Answered; the caller hangs up after `talk_ms`.
    AnsweredCallerHangsUp {
        /// Talk time.
        talk_ms: u64,
    },
    /// Not answered: the final response must be this code.
    Refused(u16),
    /// The caller cancels `after_ms` after it hears ringing.
    Cancels {
        /// Delay after the 180.
        after_ms: u64,
    },
}

/// The start of a command line that sends requests from `local_port` to `to` at `pbx`.
fn uac_args(pbx: &str, local_port: u16, to: &str) -> Vec<String> {
    [
        pbx,
        "-i",
        "127.0.0.1",
        "-p",
        &local_port.to_string(),
        "-s",
        to,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One SIP MESSAGE for [`SippRun::sender`] to send.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    /// Its Content-Type.
    pub content_type: String,
    /// Its body (one line).
    pub body: String,
    /// Its Call-ID: the same with the same `cseq` makes a retransmission.
    pub call_id: String,
    /// Its CSeq number.
    pub cseq: u32,
    /// The final response it must get.
    pub expect: u16,
}

impl OutgoingMessage {
    /// A `text/plain` message with `body` and a Call-ID of its own, which must be
    /// answered 202.
    pub fn text(body: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            content_type: "text/plain;charset=UTF-8".into(),
            body: body.into(),
            call_id: format!("pwmsg-{}-{n}@127.0.0.1", std::process::id()),
            cseq: 1,
            expect: 202,
        }
    }
}

/// The command line of a REGISTER scenario (`scenario` given last).
fn register_args<'a>(
    pbx: &'a str,
    user: &'a str,
    local_port: u16,
    contact_port: u16,
    expires: u32,
    contact_params: &'a str,
) -> impl Fn(&str) -> Vec<String> + 'a {
    move |file| {
        [
            pbx,
            "-i",
            "127.0.0.1",
            "-p",
            &local_port.to_string(),
            "-key",
            "user",
            user,
            "-key",
            "contact_port",
            &contact_port.to_string(),
            "-key",
            "expires",
            &expires.to_string(),
            "-key",
            "contact_params",
            contact_params,
            "-sf",
            &scenario(file).display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl SippRun {
    fn spawn(name: &str, args: &[String]) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::fs::File::create(dir.path().join("stdout")).map_err(|e| e.to_string())?;
        let err = std::fs::File::create(dir.path().join("stderr")).map_err(|e| e.to_string())?;
        let mut command = Command::new("sipp");
        command
            .args(args)
            .args([
                "-nostdin",
                "-m",
                "1",
                "-trace_logs",
                "-trace_err",
                "-trace_msg",
            ])
            .arg("-log_file")
            .arg(dir.path().join("log"))
            .arg("-error_file")
            .arg(dir.path().join("errors"))
            .arg("-message_file")
            .arg(dir.path().join("messages"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start sipp ({name}): {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            dir,
        })
    }

    /// A caller from `from_user` (bound to `local_port`) dialling `to` at the PBX.
    pub fn caller(
        pbx: &str,
        from_user: &str,
        to: &str,
        local_port: u16,
        end: CallerEnd,
    ) -> Result<Self, String> {
        let mut args = uac_args(pbx, local_port, to);
        // Its own RTP ports, derived from its SIP port: without -mp every sipp takes its
        // media ports from one pool of 50 pairs at 6000, and with more callers than that
        // on the machine the rest fail to start. Four per caller (audio and video, each
        // with RTCP), above the slots' SIP ports (20000..22200), below the test Asterisk's
        // RTP range (30000 on) and the kernel's ephemeral ports (32768 on).
        let media_port = 22_400 + 4 * u32::from(local_port.saturating_sub(20_000));
        if local_port >= 20_000 && media_port + 3 < 30_000 {
            args.extend(["-mp".to_owned(), media_port.to_string()]);
        }
        let mut key = |k: &str, v: String| args.extend(["-key".to_owned(), k.to_owned(), v]);
        key("from_user", from_user.to_owned());
        let file = match end {
            CallerEnd::Cancels { after_ms } => {
                key("cancel_after_ms", after_ms.to_string());
                "caller-cancel.xml"
            }
            CallerEnd::AnsweredFarHangsUp => {
                key("expect", "200".into());
                key("hangup_by", "far".into());
                key("talk_ms", "0".into());
                "caller.xml"
            }
            CallerEnd::AnsweredCallerHangsUp { talk_ms } => {
                key("expect", "200".into());
                key("hangup_by", "caller".into());
                key("talk_ms", talk_ms.to_string());
                "caller.xml"
            }
            CallerEnd::Refused(code) => {
                key("expect", code.to_string());
                key("hangup_by", "far".into());
                key("talk_ms", "0".into());
                "caller.xml"
            }
        };
        args.extend(["-sf".to_owned(), scenario(file).display().to_string()]);
        Self::spawn(&format!("caller {from_user}→{to}"), &args)
    }

    /// A sender of one SIP MESSAGE from `from_user` (bound to `local_port`) to `to` at
    /// the PBX (`sender-message.xml`); the run fails unless the final response is
    /// `message.expect`.
    pub fn sender(
        pbx: &str,
        from_user: &str,
        to: &str,
        local_port: u16,
        message: &OutgoingMessage,
    ) -> Result<Self, String> {
        let mut args = uac_args(pbx, local_port, to);
        for (k, v) in [
            ("from_user", from_user.to_owned()),
            ("expect", message.expect.to_string()),
            ("ctype", message.content_type.clone()),
            ("body", message.body.clone()),
            ("cseq", message.cseq.to_string()),
        ] {
            args.extend(["-key".to_owned(), k.to_owned(), v]);
        }
        args.extend(["-cid_str".to_owned(), message.call_id.replace('%', "")]);
        args.extend([
            "-sf".to_owned(),
            scenario("sender-message.xml").display().to_string(),
        ]);
        Self::spawn(&format!("message {from_user}→{to}"), &args)
    }

    /// A phone listening on `port` (it is not registered by this: see [`SippRun::register`]).
    pub async fn phone(port: u16, behaviour: Phone) -> Result<Self, String> {
        let mut args = vec![
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        let file = match behaviour {
            Phone::Answer { answer_after_ms } => {
                args.extend([
                    "-key".into(),
                    "answer_after_ms".into(),
                    answer_after_ms.to_string(),
                ]);
                "phone-answer.xml"
            }
            Phone::AnswerThenBye {
                answer_after_ms,
                talk_ms,
            } => {
                args.extend([
                    "-key".into(),
                    "answer_after_ms".into(),
                    answer_after_ms.to_string(),
                ]);
                args.extend(["-key".into(), "talk_ms".into(), talk_ms.to_string()]);
                "phone-answer-bye.xml"
            }
            Phone::DeskAnswer { answer_after_ms } => {
                args.extend([
                    "-key".into(),
                    "answer_after_ms".into(),
                    answer_after_ms.to_string(),
                ]);
                "phone-answer-plain.xml"
            }
            Phone::Ignore => "phone-ignore.xml",
            Phone::DeskIgnore => "phone-ignore-plain.xml",
            Phone::Reject => "phone-reject.xml",
            Phone::TakesMessage { answer } => {
                args.extend(["-key".into(), "answer".into(), answer.to_string()]);
                "phone-message.xml"
            }
        };
        args.extend(["-sf".to_owned(), scenario(file).display().to_string()]);
        let run = Self::spawn(&format!("phone on {port}"), &args)?;
        // The phone must be listening before any INVITE can reach it: wait for sipp to
        // hold the port (binding it ourselves fails once it does).
        crate::wait_until(
            &format!("sipp to listen on UDP {port}"),
            Duration::from_secs(10),
            || async move {
                std::net::UdpSocket::bind(("127.0.0.1", port))
                    .is_err()
                    .then_some(())
            },
        )
        .await?;
        Ok(run)
    }

    /// One REGISTER of `user` from `local_port`, with an RFC 8599 APNs contact on
    /// `contact_port` (`pn-param=ABCDE12345.com.example.phone.voip`, `pn-prid=<pn_prid>`);
    /// `expires` 0 unregisters. Waits for the 200.
    pub async fn register(
        pbx: &str,
        user: &str,
        local_port: u16,
        contact_port: u16,
        expires: u32,
        pn_prid: &str,
    ) -> Result<SippRun, String> {
        let params = format!(
            ";pn-provider=apns;pn-param=ABCDE12345.com.example.phone.voip;pn-prid={pn_prid}"
        );
        Self::register_contact(pbx, user, local_port, contact_port, expires, &params).await
    }

    /// One REGISTER of `user` from `local_port` whose contact is
    /// `sip:<user>@127.0.0.1:<contact_port><contact_params>`, the URI parameters given
    /// whole (`;transport=udp;pn-provider=…`) as a real client writes them; `expires` 0
    /// unregisters. Waits for the 200.
    pub async fn register_contact(
        pbx: &str,
        user: &str,
        local_port: u16,
        contact_port: u16,
        expires: u32,
        contact_params: &str,
    ) -> Result<SippRun, String> {
        let args = register_args(pbx, user, local_port, contact_port, expires, contact_params);
        let mut run = Self::spawn(
            &format!("register {user}"),
            &args("phone-register-contact.xml"),
        )?;
        run.finish(Duration::from_secs(15)).await?;
        Ok(run)
    }

    /// Like [`SippRun::register_contact`] for a `user` that must authenticate, with
    /// `password`: the final response's code (200 accepted; 401 or 403 refused).
    pub async fn register_with_password(
        pbx: &str,
        user: &str,
        password: &str,
        local_port: u16,
        contact_port: u16,
        expires: u32,
        contact_params: &str,
    ) -> Result<u16, String> {
        let mut args = register_args(pbx, user, local_port, contact_port, expires, contact_params)(
            "phone-register-auth.xml",
        );
        args.extend(["-au".into(), user.into(), "-ap".into(), password.into()]);
        let mut run = Self::spawn(&format!("register {user} with a password"), &args)?;
        run.finish(Duration::from_secs(15)).await?;
        run.log()
            .lines()
            .find_map(|l| l.trim().strip_prefix("final ")?.parse().ok())
            .ok_or_else(|| format!("sipp logged no final response:\n{}", run.report()))
    }

    /// Waits for sipp to end; an error (with sipp's own words) unless it exited 0.
    pub async fn finish(&mut self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!(
                "sipp {} failed ({status}):\n{}",
                self.name,
                self.report()
            )),
            Ok(Err(e)) => Err(format!("sipp {}: {e}", self.name)),
            Err(_) => {
                let _ = self.child.start_kill();
                Err(format!(
                    "sipp {} did not finish within {timeout:?}:\n{}",
                    self.name,
                    self.report()
                ))
            }
        }
    }

    /// The scenario's `<log>` output (e.g. `X-Pushwake-Call-Id: …`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The `X-Pushwake-Call-Id` of the INVITE a phone got, from its log.
    pub fn pushwake_call_id(&self) -> Option<String> {
        self.log().lines().find_map(|l| {
            l.strip_prefix("X-Pushwake-Call-Id: ")
                .map(|v| v.trim().to_owned())
        })
    }

    /// The value of the scenario's `<log>` line `<name>: <value>`, if it logged one
    /// (`logged("Body")`).
    pub fn logged(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}: ");
        self.log()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_owned()))
    }

    /// The SIP message trace (`-trace_msg`), with sipp's timestamps.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("messages")).unwrap_or_default()
    }

    /// Everything sipp wrote, for a failure message.
    pub fn report(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        let tail = |s: String, n: usize| {
            s.lines()
                .rev()
                .take(n)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "--- errors\n{}\n--- log\n{}\n--- messages (tail)\n{}\n--- stderr\n{}",
            tail(read("errors"), 30),
            tail(read("log"), 30),
            tail(read("messages"), 60),
            tail(read("stderr"), 10)
        )
    }
}
