//! The embedded bus: a bounded in-process channel for the single binary.
//!
//! Publishing waits while the channel is full (back-pressure). Messages carry
//! no position and committing does nothing: the embedded bus keeps nothing
//! across a restart, so durability comes from the ledger, which writes each
//! change before it is classified, and from the watcher's re-list on start.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::{Delivery, Error, Message, Result};

/// How many messages the embedded channel holds before publishing waits.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The sending end of the embedded bus; clones share one channel.
#[derive(Debug, Clone)]
pub struct EmbeddedPublisher {
    sender: mpsc::Sender<Message>,
}

/// The receiving end of the embedded bus.
#[derive(Debug)]
pub struct EmbeddedConsumer {
    receiver: mpsc::Receiver<Message>,
}

/// A channel holding up to `capacity` messages.
pub(crate) fn channel(capacity: usize) -> Result<(EmbeddedPublisher, EmbeddedConsumer)> {
    if capacity == 0 {
        return Err(Error::Zero {
            setting: "capacity",
        });
    }
    let (sender, receiver) = mpsc::channel(capacity);
    Ok((EmbeddedPublisher { sender }, EmbeddedConsumer { receiver }))
}

impl EmbeddedPublisher {
    /// Enqueues a copy of `message`, waiting while the channel is full.
    pub(crate) async fn publish(&self, message: &Message) -> Result<()> {
        self.sender
            .send(message.clone())
            .await
            .map_err(|_| Error::Closed)
    }
}

impl EmbeddedConsumer {
    /// Waits up to `wait` for a message, then takes what is ready, up to `max`.
    pub(crate) async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let messages = receive(&mut self.receiver, max, wait).await?;
        Ok(messages
            .into_iter()
            .map(|message| Delivery {
                message,
                position: None,
            })
            .collect())
    }
}

/// Waits up to `wait` for the first item, then takes what is ready, up to
/// `max`. Empty when nothing came in time; [`Error::Closed`] when nothing
/// will ever come.
pub(crate) async fn receive<T>(
    receiver: &mut mpsc::Receiver<T>,
    max: usize,
    wait: Duration,
) -> Result<Vec<T>> {
    let mut items = Vec::new();
    if max == 0 {
        return Ok(items);
    }
    match timeout(wait, receiver.recv_many(&mut items, max)).await {
        Err(_elapsed) => Ok(items),
        Ok(0) => Err(Error::Closed),
        Ok(_) => Ok(items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zero_capacity_is_rejected() {
        let err = channel(0).expect_err("zero capacity");
        assert!(err.to_string().contains("capacity"), "{err}");
    }

    #[tokio::test]
    async fn receive_returns_empty_after_waiting_when_nothing_comes() {
        let (_sender, mut receiver) = mpsc::channel::<u8>(4);
        let items = receive(&mut receiver, 10, Duration::from_millis(20))
            .await
            .expect("open channel");
        assert!(items.is_empty());
    }

    #[tokio::test]
    async fn receive_takes_at_most_max_items() {
        let (sender, mut receiver) = mpsc::channel(8);
        for i in 0..5u8 {
            sender.send(i).await.expect("room");
        }
        let first = receive(&mut receiver, 3, Duration::from_secs(1)).await;
        assert_eq!(first.expect("items"), vec![0, 1, 2]);
        let rest = receive(&mut receiver, 3, Duration::from_secs(1)).await;
        assert_eq!(rest.expect("items"), vec![3, 4]);
    }

    #[tokio::test]
    async fn receive_reports_a_closed_channel_once_drained() {
        let (sender, mut receiver) = mpsc::channel(4);
        sender.send(1u8).await.expect("room");
        drop(sender);
        let items = receive(&mut receiver, 10, Duration::from_secs(1)).await;
        assert_eq!(items.expect("last item"), vec![1]);
        let err = receive(&mut receiver, 10, Duration::from_secs(1))
            .await
            .expect_err("closed");
        assert!(matches!(err, Error::Closed), "{err:?}");
    }
}
