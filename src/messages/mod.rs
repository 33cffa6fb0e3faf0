//! Messages for sleeping phones, the daemon's side of [`pushwake_core::messages`]: the
//! `[messages]` section ([`section`]) and the keeper, which writes the courier's
//! messages to the device store, one at a time and in order, and reads them back at
//! start.
//!
//! In order, because a message delivered at once is stored and removed within
//! milliseconds: a removal overtaking its own insert would leave a delivered message
//! in the store, to be delivered again after a restart. While the store is down the
//! writes wait (the courier holds the messages in memory meanwhile) and go through
//! once it answers again.

pub mod section;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use pushwake_core::messages::{Message, MessageId};

use crate::devices::service::Devices;
use crate::store::{DeviceStore, StoreError};

/// A write for the store.
#[derive(Debug)]
pub enum StoreOp {
    /// Keep this message.
    Put(Message),
    /// Remove this one.
    Delete(MessageId),
}

/// The first wait before writing again to a store that is down; doubled up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The keeper started: where to send writes, where the messages the store held arrive
/// once it could be read, and the task, which ends once every write sent before the
/// sender was dropped is done.
pub struct Keeper {
    /// Where the writes go.
    pub writes: mpsc::UnboundedSender<StoreOp>,
    /// The store's messages, once read.
    pub restored: oneshot::Receiver<Vec<Message>>,
    /// The keeper's task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the keeper for the store of `devices`.
pub fn start_keeper(devices: Devices) -> Keeper {
    let (writes, queue) = mpsc::unbounded_channel();
    let (restored, restored_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let store = devices.open_store().await;
        keep(store, queue, restored).await;
    });
    Keeper {
        writes,
        restored: restored_rx,
        task,
    }
}

/// Waits, at most `grace`, for the keeper's last writes (at shutdown, once the driver
/// that sent them is gone); says so when some are left.
pub async fn finish(task: tokio::task::JoinHandle<()>, grace: Duration) {
    if tokio::time::timeout(grace, task).await.is_err() {
        tracing::warn!("message store writes still pending at shutdown: a message delivered just now may be delivered again, one received just now is lost");
    }
}

/// Reads the store's messages back (trying again while it is down), then carries out
/// the writes in order until the queue closes.
pub async fn keep(
    store: DeviceStore,
    mut queue: mpsc::UnboundedReceiver<StoreOp>,
    restored: oneshot::Sender<Vec<Message>>,
) {
    let mut wait = FIRST_RETRY;
    let kept = loop {
        match store.load_messages().await {
            Ok(messages) => break messages,
            Err(StoreError::Unavailable(error)) => {
                tracing::warn!(%error, retry_in = ?wait, "cannot read the kept messages yet; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the kept messages: those in the store are not delivered");
                break Vec::new();
            }
        }
    };
    if !kept.is_empty() {
        tracing::info!(
            messages = kept.len(),
            "messages kept for sleeping phones read back"
        );
    }
    let _ = restored.send(kept);
    while let Some(op) = queue.recv().await {
        write(&store, &op).await;
    }
}

/// Carries out one write, trying again while the store is down.
async fn write(store: &DeviceStore, op: &StoreOp) {
    let mut wait = FIRST_RETRY;
    let mut failing = false;
    loop {
        let result = match op {
            StoreOp::Put(message) => store.put_message(message).await.map(|_| ()),
            StoreOp::Delete(id) => store.delete_message(id).await.map(|_| ()),
        };
        let (what, id) = match op {
            StoreOp::Put(message) => ("keeping", &message.id),
            StoreOp::Delete(id) => ("removing", id),
        };
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!(message_id = %id, "the message store answers again");
                }
                return;
            }
            Err(StoreError::Unavailable(error)) => {
                if !failing {
                    tracing::warn!(message_id = %id, %error, "{what} a message in the store failed; it is held in memory and written once the store answers");
                }
                failing = true;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
            Err(error) => {
                tracing::error!(message_id = %id, %error, "{what} a message in the store failed for good");
                return;
            }
        }
    }
}
