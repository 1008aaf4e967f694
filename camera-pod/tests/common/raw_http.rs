//! Raw TCP clients that misbehave as an attacker's would: headers or a body sent a byte at a
//! time, connections opened and left idle. For the limits of camera-pod's HTTP server.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `127.0.0.1:<port>` of a `http://127.0.0.1:<port>` base URL.
pub fn address(base: &str) -> &str {
    base.strip_prefix("http://").unwrap_or(base)
}

/// What a trickling client saw.
#[derive(Debug)]
pub struct Trickled {
    /// Everything the server sent.
    pub answer: String,
    /// How long after connecting the server closed the connection; `None` when it was still
    /// open when the client gave up.
    pub closed_after: Option<Duration>,
}

/// Connects to `address`, sends `head` at once, then `trickle` one byte every `pace`, reading
/// whatever the server answers meanwhile; gives up `give_up` after connecting.
pub async fn trickle(
    address: &str,
    head: &[u8],
    trickle: &[u8],
    pace: Duration,
    give_up: Duration,
) -> Trickled {
    let stream = TcpStream::connect(address).await.unwrap();
    let connected = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let mut reading = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return (answer, connected.elapsed()),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    });
    let sent = async {
        writer.write_all(head).await?;
        for byte in trickle {
            tokio::time::sleep(pace).await;
            writer.write_all(&[*byte]).await?;
        }
        std::future::pending::<std::io::Result<()>>().await
    };
    // Until the server closes, the writes fail, or the client gives up.
    let read = tokio::select! {
        read = &mut reading => Some(read),
        _ = sent => None,
        () = tokio::time::sleep(give_up) => None,
    };
    let read = match read {
        Some(read) => Some(read),
        None => {
            let remaining = give_up.saturating_sub(connected.elapsed());
            tokio::time::timeout(remaining, &mut reading).await.ok()
        }
    };
    reading.abort();
    match read {
        Some(Ok((answer, closed_after))) => Trickled {
            answer: String::from_utf8_lossy(&answer).into_owned(),
            closed_after: Some(closed_after),
        },
        _ => Trickled {
            answer: String::new(),
            closed_after: None,
        },
    }
}

/// Whether the server closes `stream` (sending nothing) within `wait`.
pub async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0; 64];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}
