//! A small, incremental parser of server-sent events (the WHATWG `text/event-stream`
//! format), enough for OpenAI-style streams: bytes go in as the network delivers
//! them, whole events come out.
//!
//! - A UTF-8 byte order mark opening the stream is dropped, as the format says.
//! - Lines end with CRLF, LF or CR, also when the two bytes of a CRLF arrive in
//!   different network chunks; a line may be split across any number of chunks.
//! - `data:` lines accumulate (joined with `\n`) until a blank line dispatches the
//!   event; `event:` names it; lines starting with `:` are comments (keep-alives) and
//!   `id:`/`retry:`/unknown fields are ignored; one space after the colon is dropped.
//! - A blank line without data dispatches nothing; data not yet closed by a blank line
//!   when the body ends is dropped, as the format says.
//! - A line or an event longer than [`MAX_EVENT_BYTES`] is an error (a server sending
//!   an endless line cannot make the client buffer without bound).
//!
//! Written here rather than taken from a crate: it is about a hundred lines, and the
//! SSE crates bring an HTTP client or a stream framework of their own.

/// Most bytes of one line or of one event's data.
pub(crate) const MAX_EVENT_BYTES: usize = 1 << 20;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, `None` when absent (the default `message` type).
    pub(crate) event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: String,
}

/// The parser's state between network chunks.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF starting the next one ends no line.
    after_cr: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    /// A line has ended: a byte order mark is no longer possible.
    past_first_line: bool,
}

/// An event or a line longer than [`MAX_EVENT_BYTES`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLong;

impl SseParser {
    /// Feeds the next bytes of the body; returns the events they complete, in order.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, TooLong> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.line_done(&line)? {
                        out.push(ev);
                    }
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= MAX_EVENT_BYTES {
                        return Err(TooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, TooLong> {
        // A byte order mark opening the stream is not part of its first line.
        let line = match line.strip_prefix(b"\xEF\xBB\xBF") {
            Some(rest) if !self.past_first_line => rest,
            _ => line,
        };
        self.past_first_line = true;
        if line.is_empty() {
            let event = self.event.take();
            if !std::mem::take(&mut self.has_data) {
                return Ok(None);
            }
            return Ok(Some(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
            }));
        }
        if line[0] == b':' {
            return Ok(None);
        }
        // Lines split only at CR/LF bytes, so a multi-byte character is never cut.
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    return Err(TooLong);
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn events_split_across_chunks_at_every_byte() {
        let body = "data: {\"a\":1}\n\n: keep-alive\n\nevent: error\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\r\r";
        for cut in 0..=body.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&body.as_bytes()[..cut]).unwrap();
            got.extend(p.push(&body.as_bytes()[cut..]).unwrap());
            assert_eq!(
                data(&got),
                ["{\"a\":1}", "{\"b\":2}", "[DONE]"],
                "cut at {cut}"
            );
            assert_eq!(got[1].event.as_deref(), Some("error"));
            assert_eq!(got[0].event, None);
        }
        // One byte at a time.
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for b in body.as_bytes() {
            got.extend(p.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(data(&got), ["{\"a\":1}", "{\"b\":2}", "[DONE]"]);
    }

    #[test]
    fn multi_line_data_comments_and_fields() {
        let mut p = SseParser::default();
        let got = p
            .push(b"id: 7\nretry: 100\ndata:first\ndata: second\n: a comment\ndata\n\n\n\n")
            .unwrap();
        assert_eq!(data(&got), ["first\nsecond\n"]);
        // A blank line without data dispatches nothing; unfinished data stays pending.
        assert!(p.push(b"\n\ndata: tail").unwrap().is_empty());
    }

    #[test]
    fn utf8_split_between_chunks_survives() {
        let body = "data: café ❤\n\n".as_bytes();
        let mut p = SseParser::default();
        let mut got = p.push(&body[..10]).unwrap();
        got.extend(p.push(&body[10..]).unwrap());
        assert_eq!(data(&got), ["café ❤"]);
    }

    #[test]
    fn endless_lines_and_events_are_refused() {
        let mut p = SseParser::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut result = Ok(Vec::new());
        for _ in 0..=(MAX_EVENT_BYTES / chunk.len()) {
            result = p.push(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooLong));

        let mut p = SseParser::default();
        let line = format!("data: {}\n", "y".repeat(MAX_EVENT_BYTES / 4));
        let mut result = Ok(Vec::new());
        for _ in 0..5 {
            result = p.push(line.as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooLong));
    }
}
