//! A watch stream read into a channel as it comes, so a test can send on the stream, read
//! responses back with a deadline, and keep the stream drained while it does other things.

use std::time::Duration;

use etcd_client::proto::PbWatchResponse;
use etcd_client::WatchResponseStream;
use tokio::sync::mpsc;

/// The responses of one watch stream, in order; the stream's failure, if it fails, comes last.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Result<PbWatchResponse, String>>,
}

impl Inbox {
    /// Reads `stream` from a task of its own until it ends, fails or the inbox is dropped.
    pub fn spawn(mut stream: WatchResponseStream) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(r)) => {
                        if tx.send(Ok(r.0)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        Inbox { rx }
    }

    /// The next response; `Err` says why there is none: the stream failed or ended, or nothing
    /// came within `within`.
    pub async fn next(&mut self, within: Duration) -> Result<PbWatchResponse, String> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(r)) => r.map_err(|e| format!("the stream failed: {e}")),
            Ok(None) => Err("the stream ended".into()),
            Err(_) => Err(format!("nothing within {within:?}")),
        }
    }
}
