//! SPDY/3.1 framing, as much of it as the kubelet's streaming API uses
//! (the API server speaks it to the kubelet for `kubectl exec` and
//! `port-forward`, translating from kubectl's WebSocket at our pin): the
//! frames' layout, and header blocks — name/value pairs compressed with
//! one zlib stream per direction and connection, primed with the
//! protocol's dictionary.
//!
//! Flow control (WINDOW_UPDATE) is read and ignored, as the Go peer
//! (spdystream) does on both ends; SETTINGS and HEADERS likewise.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The zlib dictionary of SPDY/3 header compression (its specification,
/// section 2.6.10.1): 1423 bytes.
#[rustfmt::skip]
const DICTIONARY: &[u8] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\
\x00\x00\x00\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\
\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\
\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\
\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\
\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\
\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\
\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\
\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\
\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\
\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\
\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\
\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\
\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\
\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\
\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\
\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\
\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\
\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\
\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\
\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\
\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\
\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\
\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\
\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\
\x00\x00\x00\x06origin\
1001012012022052063003023033043053063074024054064074084094104114\
12413414415416417502504505203 Non-Authoritative Information204 N\
o Content301 Moved Permanently400 Bad Request401 Unauthorized403\
\x20Forbidden404 Not Found500 Internal Server Error501 Not Implemen\
ted503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept O\
ct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunke\
d,text/html,image/png,image/jpg,image/gif,application/xml,applic\
ation/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=\
gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// A frame's length field is 24 bits.
const MAX_LENGTH: usize = (1 << 24) - 1;
/// Uncompressed header blocks larger than this are refused (a zlib bomb).
const MAX_HEADERS: usize = 256 * 1024;

/// RST_STREAM status codes used here.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY version {0} is not spoken here (only 3)")]
    Version(u16),
    #[error("malformed SPDY {what} frame")]
    Malformed { what: &'static str },
    #[error("SPDY header block: {0}")]
    Headers(String),
}

/// Name/value pairs of a header block (names lowercase, as SPDY requires).
pub type Headers = Vec<(String, String)>;

/// A frame as read. Frames that change nothing here are [`Frame::Ignored`].
#[derive(Debug, PartialEq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    Data {
        id: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway,
    Ignored,
}

/// Reads frames from one direction of a connection.
pub struct Reader {
    inflate: Decompress,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            inflate: Decompress::new(true),
        }
    }
}

impl Reader {
    /// The next frame; `None` at a clean end of the connection.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Option<Frame>, Error> {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut payload = vec![0u8; length];
        r.read_exact(&mut payload).await?;
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data {
                id,
                fin,
                data: Bytes::from(payload),
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let word = |at: usize, what| {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]))
                .ok_or(Error::Malformed { what })
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                let id = word(0, "SYN_STREAM")?;
                // Associated stream (4), priority and slot (2), then the block.
                let block = payload
                    .get(10..)
                    .ok_or(Error::Malformed { what: "SYN_STREAM" })?;
                let headers = self.headers(block)?;
                Frame::SynStream { id, fin, headers }
            }
            SYN_REPLY => {
                let id = word(0, "SYN_REPLY")?;
                let headers = self.headers(&payload[4..])?;
                Frame::SynReply { id, fin, headers }
            }
            RST_STREAM => Frame::RstStream {
                id: word(0, "RST_STREAM")?,
                status: word(4, "RST_STREAM")?,
            },
            PING => Frame::Ping(u32::from_be_bytes(
                payload
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(Error::Malformed { what: "PING" })?,
            )),
            GOAWAY => Frame::GoAway,
            // HEADERS would need its block inflated to keep the zlib stream
            // in step; nobody sends it on these connections, so it is refused.
            8 => return Err(Error::Headers("HEADERS frames are not supported".into())),
            _ => Frame::Ignored,
        }))
    }

    fn headers(&mut self, block: &[u8]) -> Result<Headers, Error> {
        let raw = self.inflate(block)?;
        decode_block(&raw)
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut used = 0;
        loop {
            let before = self.inflate.total_in();
            let outcome =
                self.inflate
                    .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync);
            used += (self.inflate.total_in() - before) as usize;
            match outcome {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| Error::Headers(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(Error::Headers(e.to_string())),
            }
            if out.len() > MAX_HEADERS {
                return Err(Error::Headers(format!("larger than {MAX_HEADERS} bytes")));
            }
            if used == input.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(256));
        }
        Ok(out)
    }
}

fn decode_block(raw: &[u8]) -> Result<Headers, Error> {
    let mut cursor = Cursor(raw);
    let count = cursor.length()?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = cursor.text()?;
        let value = cursor.text()?;
        // Several values of one name are joined by NUL.
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        if self.0.len() < n {
            return Err(Error::Headers("truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn length(&mut self) -> Result<usize, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn text(&mut self) -> Result<String, Error> {
        let n = self.length()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Error::Headers("not UTF-8".into()))
    }
}

/// Writes frames for one direction of a connection.
pub struct Writer {
    deflate: Compress,
}

impl Default for Writer {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh stream always takes a dictionary; this cannot fail.
        let _ = deflate.set_dictionary(DICTIONARY);
        Writer { deflate }
    }
}

impl Writer {
    pub fn syn_reply(&mut self, id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let block = self.block(headers);
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend(block);
        control(SYN_REPLY, 0, &payload)
    }

    /// A SYN_STREAM (what a client sends; the tests play the client).
    #[cfg(test)]
    pub fn syn_stream(&mut self, id: u32, fin: bool, headers: &[(&str, &str)]) -> Vec<u8> {
        let block = self.block(headers);
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend([0, 0, 0, 0, 0, 0]);
        payload.extend(block);
        control(SYN_STREAM, if fin { FLAG_FIN } else { 0 }, &payload)
    }

    fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, value) in headers {
            for text in [name.to_ascii_lowercase().as_str(), value] {
                raw.extend((text.len() as u32).to_be_bytes());
                raw.extend(text.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut used = 0;
        loop {
            let before = self.deflate.total_in();
            // In-memory compression of a bounded buffer with room to spare: no error arises.
            let _ = self
                .deflate
                .compress_vec(&raw[used..], &mut out, FlushCompress::Sync);
            used += (self.deflate.total_in() - before) as usize;
            if used == raw.len() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// A DATA frame (`data` at most [`MAX_LENGTH`] bytes; callers send chunks).
pub fn data(id: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let data = &data[..data.len().min(MAX_LENGTH)];
    let mut f = (id & 0x7fff_ffff).to_be_bytes().to_vec();
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend(data);
    f
}

pub fn rst_stream(id: u32, status: u32) -> Vec<u8> {
    let mut payload = id.to_be_bytes().to_vec();
    payload.extend(status.to_be_bytes());
    control(RST_STREAM, 0, &payload)
}

pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// GOAWAY with status OK: no new streams after `last`.
pub fn goaway(last: u32) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend(0u32.to_be_bytes());
    control(GOAWAY, 0, &payload)
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = (0x8000 | VERSION).to_be_bytes().to_vec();
    f.extend(kind.to_be_bytes());
    f.push(flags);
    f.extend(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specifications() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
    }

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    async fn read_all(bytes: Vec<u8>) -> Vec<Frame> {
        let mut reader = Reader::default();
        let mut input = &bytes[..];
        let mut frames = Vec::new();
        while let Some(f) = reader.read(&mut input).await.unwrap() {
            frames.push(f);
        }
        frames
    }

    #[tokio::test]
    async fn frames_round_trip_with_one_zlib_stream_across_header_blocks() {
        let mut w = Writer::default();
        let mut wire = w.syn_stream(1, false, &[("streamType", "error")]);
        wire.extend(w.syn_stream(3, true, &[("streamtype", "data"), ("port", "80")]));
        wire.extend(w.syn_reply(3, &[]));
        wire.extend(data(3, true, b"hello"));
        wire.extend(ping(7));
        wire.extend(rst_stream(5, REFUSED_STREAM));
        wire.extend(goaway(3));
        let frames = read_all(wire).await;
        let h = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            frames,
            vec![
                Frame::SynStream {
                    id: 1,
                    fin: false,
                    headers: h(&[("streamtype", "error")])
                },
                Frame::SynStream {
                    id: 3,
                    fin: true,
                    headers: h(&[("streamtype", "data"), ("port", "80")])
                },
                Frame::SynReply {
                    id: 3,
                    fin: false,
                    headers: vec![]
                },
                Frame::Data {
                    id: 3,
                    fin: true,
                    data: Bytes::from_static(b"hello")
                },
                Frame::Ping(7),
                Frame::RstStream {
                    id: 5,
                    status: REFUSED_STREAM
                },
                Frame::GoAway,
            ]
        );
    }

    /// A header block as Go's compress/zlib writes it (best compression,
    /// the dictionary, a sync flush): what the API server sends.
    #[tokio::test]
    async fn reads_a_block_compressed_at_another_level() {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(DICTIONARY).unwrap();
        let raw = [
            &1u32.to_be_bytes()[..],
            &4u32.to_be_bytes(),
            b"port",
            &4u32.to_be_bytes(),
            b"8080",
        ]
        .concat();
        let mut block = Vec::with_capacity(256);
        deflate
            .compress_vec(&raw, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut payload = 9u32.to_be_bytes().to_vec();
        payload.extend([0, 0, 0, 0, 0, 0]);
        payload.extend(block);
        let frames = read_all(control(SYN_STREAM, 0, &payload)).await;
        assert_eq!(
            frames,
            vec![Frame::SynStream {
                id: 9,
                fin: false,
                headers: vec![("port".into(), "8080".into())]
            }]
        );
    }

    #[tokio::test]
    async fn refuses_other_versions_and_garbage_blocks() {
        let mut f = control(PING, 0, &1u32.to_be_bytes());
        f[1] = 2;
        let mut r = Reader::default();
        assert!(matches!(r.read(&mut &f[..]).await, Err(Error::Version(2))));
        let bad = control(
            SYN_STREAM,
            0,
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x78, 0xbb, 1, 2, 3],
        );
        assert!(matches!(
            Reader::default().read(&mut &bad[..]).await,
            Err(Error::Headers(_))
        ));
        let short = control(RST_STREAM, 0, &[0, 0, 0, 1]);
        assert!(matches!(
            Reader::default().read(&mut &short[..]).await,
            Err(Error::Malformed { .. })
        ));
    }
}
