//! MQTT over WebSocket (RFC 6455, with tokio-tungstenite): the upgrade on path `/mqtt`
//! with subprotocol `mqtt`, then binary messages carried as a plain byte stream. An MQTT
//! packet may span messages and a message may hold several packets: the connection
//! sees only bytes. Text messages are refused (MQTT is binary).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The one path MQTT is served on.
pub const PATH: &str = "/mqtt";
/// Subprotocols accepted, in order of preference (`mqttv3.1` is what old clients send).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// Most bytes the HTTP upgrade request may take: its headers are read whole.
const HANDSHAKE_MAX: usize = 16 * 1024;
/// Room for the WebSocket framing around a packet of the maximum size.
const FRAME_SLACK: usize = 64;

/// Answers the upgrade request. `max_packet` bounds each WebSocket message: one larger
/// than the largest MQTT packet we accept is refused before it is buffered whole.
pub async fn accept<S>(stream: S, max_packet: usize) -> Result<WsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = max_packet.saturating_add(FRAME_SLACK);
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let capped = Capped {
        inner: stream,
        budget: HANDSHAKE_MAX,
    };
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(capped, check, Some(config))
        .await
        .map_err(|e| e.to_string())?;
    ws.get_mut().budget = usize::MAX;
    Ok(WsStream {
        ws,
        pending: Bytes::new(),
    })
}

/// Accepts only `GET /mqtt` asking for an MQTT subprotocol, and names the one chosen.
/// (The error type is the library's callback signature.)
#[allow(clippy::result_large_err)]
fn check(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, why: &str| {
        let mut r = ErrorResponse::new(Some(why.to_owned()));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != PATH {
        return Err(refuse(StatusCode::NOT_FOUND, "MQTT is served on /mqtt"));
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let Some(chosen) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol \"mqtt\" is required",
        ));
    };
    resp.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(chosen),
    );
    Ok(resp)
}

/// A stream that fails once more than `budget` bytes were read: bounds the upgrade
/// request, whose headers the WebSocket library buffers whole.
pub struct Capped<S> {
    inner: S,
    budget: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        self.budget = self.budget.checked_sub(read).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "WebSocket upgrade request too large",
            )
        })?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An upgraded WebSocket as a byte stream.
pub struct WsStream<S> {
    ws: WebSocketStream<Capped<S>>,
    /// The rest of the last binary message, not yet read.
    pending: Bytes,
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {e}"))
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(self.ws.poll_next_unpin(cx)) {
                // End of stream: the peer closed.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text message: MQTT travels in binary messages",
                    )))
                }
                // Pings are answered by the library; pongs and raw frames mean nothing.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.ws.poll_ready_unpin(cx)).map_err(ws_error)?;
        self.ws
            .start_send_unpin(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_close_unpin(cx).map_err(ws_error)
    }
}
