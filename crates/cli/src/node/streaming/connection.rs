//! The server end of a SPDY/3.1 connection: the peer opens streams (each
//! is answered with SYN_REPLY and handed out with its headers), data is
//! routed to them, PINGs are answered. One task reads, one writes; a
//! stream's data waits in a small queue, so a slow consumer slows the
//! connection rather than growing memory.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, Frame};

/// Largest DATA frame sent (as Go's io.Copy buffers).
pub const CHUNK: usize = 32 * 1024;

/// How long a closed connection waits for the peer to hang up before it
/// drops the socket (dropping at once could reset what is still unread).
const LINGER: Duration = Duration::from_secs(10);

/// A stream the peer opened.
pub struct Stream {
    pub headers: spdy::Headers,
    /// The peer's data; ends at its FIN or reset.
    pub incoming: mpsc::Receiver<Bytes>,
    pub out: StreamWriter,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Out {
    Raw(Vec<u8>),
    Reply(u32),
    /// Flush, say GOAWAY and shut the write side.
    Close,
}

/// Sends on one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    frames: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Sends `data` (in chunks); false if the connection is gone.
    pub async fn send(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            let frame = Out::Raw(spdy::data(self.id, false, chunk));
            if self.frames.send(frame).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Half-closes the stream: nothing more is sent on it.
    pub async fn finish(&self) {
        let _ = self
            .frames
            .send(Out::Raw(spdy::data(self.id, true, &[])))
            .await;
    }
}

/// The connection: new streams arrive on `streams`.
pub struct Connection {
    pub streams: mpsc::Receiver<Stream>,
    frames: mpsc::Sender<Out>,
    reading: tokio::sync::watch::Receiver<bool>,
}

impl Connection {
    /// Serves the connection on `io` until the peer hangs up or [`Connection::close`].
    pub fn serve<T>(io: T) -> Connection
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (frames, out) = mpsc::channel(64);
        let frames_for_reader = frames.clone();
        let (new_streams, streams) = mpsc::channel(16);
        let (ended, reading) = tokio::sync::watch::channel(true);
        let reader = tokio::spawn(async move {
            read_loop(read, frames_for_reader, new_streams).await;
            let _ = ended.send(false);
        });
        tokio::spawn(write_loop(write, out, reader));
        Connection {
            streams,
            frames,
            reading,
        }
    }

    /// Resolves when the peer has hung up (or broke the protocol).
    pub fn hung_up(&self) -> impl Future<Output = ()> + use<> {
        let mut reading = self.reading.clone();
        async move {
            let _ = reading.wait_for(|r| !*r).await;
        }
    }

    /// Ends the connection once what was sent before is written.
    pub async fn close(self) {
        let _ = self.frames.send(Out::Close).await;
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read: R,
    frames: mpsc::Sender<Out>,
    new_streams: mpsc::Sender<Stream>,
) {
    let mut reader = spdy::Reader::default();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        let frame = match reader.read(&mut read).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "kubelet streaming connection ends");
                return;
            }
        };
        match frame {
            Frame::SynStream { id, fin, headers } => {
                let (tx, incoming) = mpsc::channel(16);
                if frames.send(Out::Reply(id)).await.is_err() {
                    return;
                }
                if !fin {
                    open.insert(id, tx);
                }
                let out = StreamWriter {
                    id,
                    frames: frames.clone(),
                };
                let stream = Stream {
                    headers,
                    incoming,
                    out,
                };
                if new_streams.send(stream).await.is_err() {
                    // Nobody takes new streams any more.
                    let _ = frames
                        .send(Out::Raw(spdy::rst_stream(id, spdy::REFUSED_STREAM)))
                        .await;
                }
            }
            Frame::Data { id, fin, data } => {
                if let Some(tx) = open.get(&id)
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    open.remove(&id);
                }
                if fin {
                    open.remove(&id);
                }
            }
            Frame::RstStream { id, .. } => {
                open.remove(&id);
            }
            Frame::Ping(id) => {
                if frames.send(Out::Raw(spdy::ping(id))).await.is_err() {
                    return;
                }
            }
            Frame::GoAway => return,
            Frame::SynReply { id, .. } => {
                // This end opens no streams.
                let _ = frames
                    .send(Out::Raw(spdy::rst_stream(id, spdy::PROTOCOL_ERROR)))
                    .await;
            }
            Frame::Ignored => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut out: mpsc::Receiver<Out>,
    reader: tokio::task::JoinHandle<()>,
) {
    let mut writer = spdy::Writer::default();
    let mut last = 0;
    while let Some(item) = out.recv().await {
        let bytes = match item {
            Out::Raw(b) => b,
            Out::Reply(id) => {
                last = last.max(id);
                writer.syn_reply(id, &[])
            }
            Out::Close => {
                let _ = write.write_all(&spdy::goaway(last)).await;
                break;
            }
        };
        if write.write_all(&bytes).await.is_err() {
            break;
        }
        // Flush when nothing else is queued: interactive output goes out at once.
        if out.is_empty() && write.flush().await.is_err() {
            break;
        }
    }
    let _ = write.shutdown().await;
    // The peer hangs up on GOAWAY; the reader ends then (or after LINGER).
    let abort = reader.abort_handle();
    if tokio::time::timeout(LINGER, reader).await.is_err() {
        abort.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The client's side of a session, over an in-memory pipe: streams are
    /// answered, data goes both ways with FINs, PINGs come back, and close
    /// ends with GOAWAY.
    #[tokio::test]
    async fn a_session_as_the_api_server_drives_it() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut conn = Connection::serve(server);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let mut w = spdy::Writer::default();
        let mut wire = w.syn_stream(1, false, &[("streamType", "error")]);
        wire.extend(w.syn_stream(3, false, &[("streamType", "stdin")]));
        // The PING first: its answer is queued before stdin's FIN is seen.
        wire.extend(spdy::ping(7));
        wire.extend(spdy::data(3, false, b"hello "));
        wire.extend(spdy::data(3, true, b"world"));
        to_server.write_all(&wire).await.unwrap();

        let error = conn.streams.recv().await.expect("the error stream");
        assert_eq!(error.header("streamtype"), Some("error"));
        let mut stdin = conn.streams.recv().await.expect("the stdin stream");
        let mut got = Vec::new();
        while let Some(b) = stdin.incoming.recv().await {
            got.extend_from_slice(&b);
        }
        assert_eq!(got, b"hello world", "data until the FIN");
        error.out.send(b"{}").await;
        error.out.finish().await;
        conn.close().await;

        let mut r = spdy::Reader::default();
        let mut frames = Vec::new();
        while let Some(f) = r.read(&mut from_server).await.unwrap() {
            frames.push(f);
        }
        assert_eq!(
            frames,
            vec![
                Frame::SynReply {
                    id: 1,
                    fin: false,
                    headers: vec![]
                },
                Frame::SynReply {
                    id: 3,
                    fin: false,
                    headers: vec![]
                },
                Frame::Ping(7),
                Frame::Data {
                    id: 1,
                    fin: false,
                    data: Bytes::from_static(b"{}")
                },
                Frame::Data {
                    id: 1,
                    fin: true,
                    data: Bytes::new()
                },
                Frame::GoAway,
            ]
        );
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_is_noticed() {
        let (client, server) = tokio::io::duplex(1024);
        let conn = Connection::serve(server);
        drop(client);
        conn.hung_up().await;
    }
}
