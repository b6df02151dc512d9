//! Counting gRPC messages as a body streams by (for Istio's
//! `istio_request_messages_total` / `istio_response_messages_total`): each
//! message is a 5-byte prefix — a compressed flag and a big-endian length —
//! and that many bytes of payload, split across data frames anyhow.

#[derive(Debug, Default)]
pub struct MessageCounter {
    prefix: [u8; 5],
    /// Bytes of the current prefix read so far.
    filled: usize,
    /// Payload bytes of the current message still to come.
    remaining: u64,
    pub messages: u64,
}

impl MessageCounter {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                data = &data[n..];
                self.remaining -= n as u64;
                continue;
            }
            let n = data.len().min(5 - self.filled);
            self.prefix[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == 5 {
                self.messages += 1;
                self.filled = 0;
                let [_, a, b, c, d] = self.prefix;
                self.remaining = u64::from(u32::from_be_bytes([a, b, c, d]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_across_frames() {
        let msg = |len: u8| {
            let mut m = vec![0, 0, 0, 0, len];
            m.extend(std::iter::repeat_n(7, len as usize));
            m
        };
        let mut all = msg(3);
        all.extend(msg(0));
        all.extend(msg(10));
        // Whole, and byte by byte.
        let mut c = MessageCounter::default();
        c.feed(&all);
        assert_eq!(c.messages, 3);
        let mut c = MessageCounter::default();
        for b in &all {
            c.feed(std::slice::from_ref(b));
        }
        assert_eq!(c.messages, 3);
    }
}
