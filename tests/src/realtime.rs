//! A realtime client for tests: a real WebSocket (tokio-tungstenite) against
//! the real router.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame it expects.
pub const WAIT: Duration = Duration::from_secs(10);

/// One socket.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a socket ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// A close frame with this code.
    Code(u16),
    /// The connection ended without a close frame.
    Dropped,
}

impl Ws {
    /// Open a socket to `addr`, not yet authenticated.
    pub async fn open(addr: SocketAddr) -> Self {
        let (stream, response) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/realtime"))
                .await
                .expect("the WebSocket handshake succeeds");
        assert_eq!(response.status().as_u16(), 101);
        Self { stream }
    }

    /// Open a socket whose TCP receive buffer is small (4 KiB), and
    /// authenticate: a client that stops reading fills it at once.
    pub async fn connect_small(addr: SocketAddr, token: &str) -> (Self, Value) {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("a small receive buffer");
        let tcp = socket.connect(addr).await.expect("connected");
        let (stream, _) = tokio_tungstenite::client_async(
            format!("ws://{addr}/api/v1/realtime"),
            MaybeTlsStream::Plain(tcp),
        )
        .await
        .expect("the WebSocket handshake succeeds");
        let mut ws = Self { stream };
        ws.send(json!({"type": "connect", "id": 1, "token": token}))
            .await;
        let connected = ws.next().await;
        assert_eq!(connected["type"], "connected", "{connected}");
        (ws, connected)
    }

    /// Open a socket and authenticate with `token`; the `connected` frame.
    pub async fn connect(addr: SocketAddr, token: &str) -> (Self, Value) {
        let mut ws = Self::open(addr).await;
        ws.send(json!({"type": "connect", "id": 1, "token": token}))
            .await;
        let connected = ws.next().await;
        assert_eq!(connected["type"], "connected", "{connected}");
        (ws, connected)
    }

    /// Send a frame.
    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    /// Send raw text.
    pub async fn send_text(&mut self, text: String) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("the frame is sent");
    }

    /// The next text frame, parsed (pings are answered by the library).
    pub async fn next(&mut self) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return serde_json::from_str(t.as_str()).expect("a JSON frame")
                    }
                    Some(Ok(Message::Close(c))) => {
                        panic!("closed while a frame was awaited: {c:?}")
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("the socket ended while a frame was awaited: {other:?}"),
                }
            }
        })
        .await
        .expect("a frame in time")
    }

    /// The next frame that is not a `pub`... or is: the next of `type`.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let f = self.next().await;
            if f["type"] == kind {
                return f;
            }
        }
    }

    /// A frame within `within`, or `None`.
    pub async fn maybe_next(&mut self, within: Duration) -> Option<Value> {
        tokio::time::timeout(within, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return Some(serde_json::from_str(t.as_str()).expect("a JSON frame"))
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Subscribe; the `subscribed` (or `error`) answer.
    pub async fn sub(&mut self, channel: &str, since: Option<(&str, u64)>) -> Value {
        let mut frame = json!({"type": "sub", "id": 7, "channel": channel});
        if let Some((epoch, offset)) = since {
            frame["since"] = json!({"epoch": epoch, "offset": offset});
        }
        self.send(frame).await;
        loop {
            let f = self.next().await;
            if f["type"] == "subscribed" || f["type"] == "error" {
                return f;
            }
        }
    }

    /// Read until the socket ends; frames received meanwhile are dropped.
    pub async fn end(&mut self, within: Duration) -> End {
        tokio::time::timeout(within, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Close(Some(c)))) => return End::Code(u16::from(c.code)),
                    Some(Ok(Message::Close(None))) => {
                        return End::Code(u16::from(CloseCode::Status))
                    }
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => return End::Dropped,
                }
            }
        })
        .await
        .expect("the socket ends in time")
    }

    /// Close from the client's side.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// The `pub` frames among `frames`, as `(offset, frame)`.
pub fn offsets(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| f["offset"].as_u64().expect("a pub has an offset"))
        .collect()
}
