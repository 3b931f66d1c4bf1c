//! A bounded Server-Sent Events decoder: bytes in, the `data` of each event out. Lines may end
//! in `\n`, `\r\n` or `\r` (the SSE specification); `data:` lines of one event are joined with
//! `\n`; comments (`:`) and other fields are ignored; an empty line ends an event.
//!
//! Every limit names itself when hit: a line (or an event's data) longer than `max_line` bytes, a
//! response longer than `max_body` bytes, a line that is not UTF-8. Work per byte is constant (a
//! line is scanned once, when its bytes arrive), so a server cannot make the client spin.

/// Why a stream is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A line or an event's data grew past the line limit.
    LineTooLong { limit: usize },
    /// The response body grew past the body limit.
    BodyTooLarge { limit: u64 },
    /// A line is not UTF-8 (binary data).
    NotUtf8 { line: u64 },
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::LineTooLong { limit } => write!(f, "SSE line or event longer than {limit} bytes (the line limit)"),
            SseError::BodyTooLarge { limit } => write!(f, "response body larger than {limit} bytes (the body limit)"),
            SseError::NotUtf8 { line } => write!(f, "SSE line {line} is not UTF-8 (binary data in the stream)"),
        }
    }
}

impl std::error::Error for SseError {}

/// The data of decoded events, in one buffer: decoding allocates nothing per event once the
/// buffer has grown to a chunk's worth (a stream is hundreds of events a second per request).
/// The decoder writes an event's data straight into `text` as its lines arrive; the event counts
/// (is in [`iter`](Self::iter)) once its empty line ends it. Feed one stream into one `Events`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Events {
    text: String,
    /// Where each event's data ends in `text`; what follows the last end is the data of the
    /// event still being read.
    ends: Vec<usize>,
}

impl Events {
    /// Room for `bytes` of event data before the first reallocation.
    pub fn with_capacity(bytes: usize) -> Self {
        Self { text: String::with_capacity(bytes), ends: Vec::with_capacity(16) }
    }

    /// Each complete event's data, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let data = &self.text[start..end];
            start = end;
            data
        })
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Forgets the complete events, keeping the buffers and the event still being read.
    pub fn clear(&mut self) {
        let done = self.done();
        if done > 0 {
            self.text.drain(..done);
        }
        self.ends.clear();
    }

    /// Where the complete events end in `text`.
    fn done(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Bytes of data of the event still being read.
    fn pending(&self) -> usize {
        self.text.len() - self.done()
    }

    fn end_event(&mut self) {
        self.ends.push(self.text.len());
    }
}

/// Incremental decoder; feed it the body as it arrives with [`push`](Self::push).
#[derive(Debug)]
pub struct SseDecoder {
    max_line: usize,
    max_body: u64,
    /// Bytes of a line split across pushes (no terminator); a line that arrives whole is read
    /// where it lies.
    line: Vec<u8>,
    /// The event being read has a `data` field (its data is the tail of `Events::text`).
    has_data: bool,
    /// The previous byte was `\r`: a `\n` right after it ends nothing more.
    after_cr: bool,
    body: u64,
    lines: u64,
}

impl SseDecoder {
    pub fn new(max_line: usize, max_body: u64) -> Self {
        Self { max_line, max_body, line: Vec::new(), has_data: false, after_cr: false, body: 0, lines: 0 }
    }

    /// Feeds `bytes`; appends the data of every event they complete to `events`.
    pub fn push(&mut self, bytes: &[u8], events: &mut Events) -> Result<(), SseError> {
        self.body = self.body.saturating_add(bytes.len() as u64);
        if self.body > self.max_body {
            return Err(SseError::BodyTooLarge { limit: self.max_body });
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.after_cr && rest[0] == b'\n' {
                rest = &rest[1..];
                self.after_cr = false;
                continue;
            }
            self.after_cr = false;
            match memchr::memchr2(b'\n', b'\r', rest) {
                Some(i) => {
                    self.after_cr = rest[i] == b'\r';
                    self.end_line(&rest[..i], events)?;
                    rest = &rest[i + 1..];
                }
                None => {
                    self.check_line(self.line.len() + rest.len(), events)?;
                    self.line.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    /// The end of the body: a last event not followed by an empty line is dispatched too (what
    /// browsers do not, but servers that close right after `data: [DONE]` rely on).
    pub fn finish(&mut self, events: &mut Events) -> Result<(), SseError> {
        if !self.line.is_empty() {
            self.end_line(&[], events)?;
        }
        self.dispatch(events);
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Events) {
        if std::mem::take(&mut self.has_data) {
            events.end_event();
        }
    }

    /// A line of `len` bytes may join the event being read.
    fn check_line(&self, len: usize, events: &Events) -> Result<(), SseError> {
        if len + events.pending() > self.max_line {
            return Err(SseError::LineTooLong { limit: self.max_line });
        }
        Ok(())
    }

    /// A line ends with `last`, its bytes in this push (after any kept from earlier pushes).
    fn end_line(&mut self, last: &[u8], events: &mut Events) -> Result<(), SseError> {
        self.check_line(self.line.len() + last.len(), events)?;
        if self.line.is_empty() {
            return self.read_line(last, events);
        }
        self.line.extend_from_slice(last);
        // The split line's buffer is kept for the next one.
        let line = std::mem::take(&mut self.line);
        let read = self.read_line(&line, events);
        self.line = line;
        self.line.clear();
        read
    }

    fn read_line(&mut self, line: &[u8], events: &mut Events) -> Result<(), SseError> {
        self.lines += 1;
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8 { line: self.lines })?;
        let (field, value) = match line.find(':') {
            Some(0) => ("", ""), // a comment
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        if field == "data" {
            if self.has_data {
                events.text.push('\n');
            }
            events.text.push_str(value);
            self.has_data = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> Result<Vec<String>, SseError> {
        let mut d = SseDecoder::new(64, 1 << 20);
        let mut out = Events::default();
        d.push(input, &mut out)?;
        d.finish(&mut out)?;
        Ok(out.iter().map(String::from).collect())
    }

    #[test]
    fn events_lines_and_comments() {
        assert_eq!(decode(b"data: a\n\ndata: b\r\n\r\n: ping\n\ndata:c\rdata: d\r\r").unwrap(), ["a", "b", "c\nd"]);
        assert_eq!(decode(b"event: x\nid: 1\ndata: [DONE]").unwrap(), ["[DONE]"]);
        assert_eq!(decode(b"retry: 5\n\n").unwrap(), Vec::<String>::new());
        assert_eq!(decode(b"data:\n\ndata\n\n: c\n\n").unwrap(), ["", ""], "an empty data field is an event");
    }

    #[test]
    fn split_anywhere_gives_the_same_events() {
        let input = b"data: one\r\n\r\ndata: two\n\n";
        for cut in 0..input.len() {
            let mut d = SseDecoder::new(64, 1 << 20);
            let mut out = Events::default();
            d.push(&input[..cut], &mut out).unwrap();
            d.push(&input[cut..], &mut out).unwrap();
            d.finish(&mut out).unwrap();
            assert_eq!(out.iter().collect::<Vec<_>>(), ["one", "two"], "cut at {cut}");
        }
    }

    #[test]
    fn an_event_read_across_pushes_survives_clearing_the_complete_ones() {
        let mut d = SseDecoder::new(64, 1 << 20);
        let mut out = Events::default();
        let mut seen = Vec::new();
        for part in [&b"data: one\n\ndata: tw"[..], b"o\ndata: lines\n", b"\ndata: [DONE]"] {
            d.push(part, &mut out).unwrap();
            seen.extend(out.iter().map(String::from));
            out.clear();
        }
        d.finish(&mut out).unwrap();
        seen.extend(out.iter().map(String::from));
        assert_eq!(seen, ["one", "two\nlines", "[DONE]"]);
    }

    #[test]
    fn limits_name_themselves() {
        assert_eq!(decode(&[b'x'; 100]).unwrap_err(), SseError::LineTooLong { limit: 64 });
        let many = b"data: aaaaaaaaaaaaaaaaaaaa\n".repeat(5);
        assert_eq!(decode(&many).unwrap_err(), SseError::LineTooLong { limit: 64 }, "an event's data counts too");
        assert_eq!(decode(b"data: \xff\xfe\n\n").unwrap_err(), SseError::NotUtf8 { line: 1 });
        let mut d = SseDecoder::new(64, 10);
        assert!(d.push(b"data: 12345678\n", &mut Events::default()).unwrap_err().to_string().contains("10 bytes"));
    }
}
