//! Multipart bodies and streams as terminals write them: [`parse`] for a whole bounded
//! `multipart/form-data` or `multipart/mixed` request body, [`PartStream`] for a long-lived
//! `multipart/mixed` (or `x-mixed-replace`) response read chunk by chunk.
//!
//! Both are one state machine, written for the devices rather than for RFC 2046:
//!
//! - The boundary line is matched case-insensitively: Hikvision firmware declares
//!   `boundary=mime_boundary` in the header and writes `--MIME_boundary` in the body.
//! - Lines end in CRLF or in a bare LF.
//! - A body that ends without the closing `--boundary--` (or with no line end after the last
//!   boundary) ends its last part there.
//! - A part with a `Content-Length` ends after that many bytes, without waiting for the next
//!   boundary line: a stream device writes the boundary only when its next event happens.
//!   A length the bytes after it contradict (neither a line end nor a boundary follows) is
//!   ignored and the part ends at the next boundary line instead.
//! - Anything before the first boundary line and after a closing one is skipped.
//!
//! Memory is bounded: a part over `max_part_bytes` (declared or seen), or headers over
//! [`MAX_HEADER_BYTES`], is an error, after which the splitter drops what it holds and looks
//! for the next boundary line; it never buffers more than one part's bound plus one chunk.

use std::fmt;

use super::WireError;

/// Longest header block of one part. Devices send two or three short headers.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most parts one request body may have; a push has two or three.
pub const MAX_PARTS: usize = 64;
/// Longest boundary accepted (RFC 2046 says 70; devices stay well under).
const MAX_BOUNDARY_BYTES: usize = 200;
/// Input is taken in slices of this size, so the buffer never holds much more than a part.
const FEED_BYTES: usize = 64 * 1024;
/// Transport padding allowed after a boundary before its line end.
const MAX_BOUNDARY_LINE_PADDING: usize = 256;

/// One part: its headers as the device wrote them, and its body.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Part {
    /// `name` from `Content-Disposition` (form-data).
    pub name: Option<String>,
    /// `filename` from `Content-Disposition`.
    pub filename: Option<String>,
    /// The `Content-Type` header, as written.
    pub content_type: Option<String>,
    /// The `Content-Length` header, when it was a number.
    pub content_length: Option<usize>,
    pub body: Vec<u8>,
}

impl Part {
    /// The part's media type, lowercased, without parameters (`""` when it has none).
    pub fn media_type(&self) -> String {
        super::media_type(self.content_type.as_deref().unwrap_or(""))
    }

    /// Whether the part is named `name` (ASCII case-insensitive).
    pub fn is_named(&self, name: &str) -> bool {
        self.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }
}

impl fmt::Debug for Part {
    // Bodies carry faces and member ids: their size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part")
            .field("name", &self.name)
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("content_length", &self.content_length)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// The boundary of a `multipart/*` content type, or why there is none.
pub fn boundary(content_type: &str) -> Result<String, WireError> {
    if !super::media_type(content_type).starts_with("multipart/") {
        return Err(WireError::UnexpectedContentType);
    }
    let (_, params) = content_type.split_once(';').ok_or(WireError::NoBoundary)?;
    let value = param(params, "boundary").ok_or(WireError::NoBoundary)?;
    let ok = !value.is_empty()
        && value.len() <= MAX_BOUNDARY_BYTES
        && !value.bytes().any(|b| b == b'\r' || b == b'\n');
    if ok {
        Ok(value)
    } else {
        Err(WireError::NoBoundary)
    }
}

/// Parses a whole multipart body (at most [`MAX_PARTS`] parts). The caller has bounded the
/// body's size; a part can be no larger than the body. When the content type names no
/// boundary (or is not multipart at all) but the body's first line is a boundary line, that
/// line's boundary is used: some firmware sends a bare `multipart/form-data`.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Vec<Part>, WireError> {
    let boundary = match boundary(content_type) {
        Ok(b) => b,
        Err(e) => sniff_boundary(body).ok_or(e)?,
    };
    let mut stream = PartStream::new(&boundary, body.len());
    stream.part_limit = Some(MAX_PARTS);
    stream.whole_body = true;
    let mut parts = stream.push(body)?;
    parts.extend(stream.finish()?);
    if parts.len() > MAX_PARTS {
        return Err(WireError::TooManyParts { limit: MAX_PARTS });
    }
    if parts.is_empty() {
        return Err(WireError::NoParts);
    }
    Ok(parts)
}

/// The boundary of a body whose first line is a boundary line (`--abc`).
pub(crate) fn sniff_boundary(body: &[u8]) -> Option<String> {
    let body = body.trim_ascii_start();
    let end = body
        .iter()
        .take(MAX_BOUNDARY_BYTES + 4)
        .position(|&b| b == b'\n')?;
    let line = trim_line_end(&body[..=end]).trim_ascii_end();
    let text = std::str::from_utf8(line.strip_prefix(b"--")?).ok()?;
    let ok = !text.is_empty()
        && text.len() <= MAX_BOUNDARY_BYTES
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    ok.then(|| text.to_string())
}

/// A parameter of a header value (`name="Picture"`, `boundary=abc`), unquoted; the key is
/// matched case-insensitively.
pub(crate) fn param(params: &str, key: &str) -> Option<String> {
    let mut rest = params;
    loop {
        rest = rest.trim_start_matches([';', ' ', '\t']);
        if rest.is_empty() {
            return None;
        }
        let (k, after) = match rest.find(['=', ';']) {
            Some(i) if rest.as_bytes()[i] == b'=' => (&rest[..i], &rest[i + 1..]),
            Some(i) => {
                rest = &rest[i..];
                continue;
            }
            None => return None,
        };
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        if k.trim().eq_ignore_ascii_case(key) {
            return Some(value);
        }
        rest = tail;
    }
}

#[derive(Debug)]
enum State {
    /// Looking for a boundary line (the preamble, between parts, after a closing line).
    Seek,
    /// After a boundary line, reading the part's headers.
    Headers,
    /// Reading a part's body.
    Body(Part),
}

/// Where a boundary line might start.
enum Scan {
    /// A boundary line starts here.
    Found(usize),
    /// The bytes here might start one; more input will tell.
    Partial(usize),
    None,
}

/// An incremental multipart splitter for one long-lived response: feed it what the socket
/// gives, take the parts that completed.
pub struct PartStream {
    /// `--` and the boundary.
    delimiter: Vec<u8>,
    max_part_bytes: usize,
    buf: Vec<u8>,
    /// Whether `buf[0]` starts a line (a boundary counts only at a line start).
    line_start: bool,
    /// Where the next scan for a boundary resumes (everything before is known not to be one).
    scan_from: usize,
    state: State,
    /// Parts emitted so far, checked against `part_limit` (whole bodies only).
    emitted: usize,
    part_limit: Option<usize>,
    /// Reading one whole body: a declared length beyond it is a wrong header, ignored (the
    /// part ends at its boundary), not a part too large.
    whole_body: bool,
}

impl fmt::Debug for PartStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartStream")
            .field("max_part_bytes", &self.max_part_bytes)
            .field("buffered", &self.buf.len())
            .field("state", &self.state)
            .finish()
    }
}

impl PartStream {
    /// A splitter for `boundary` (as in the content type, without the leading `--`). Parts
    /// over `max_part_bytes` are errors.
    pub fn new(boundary: &str, max_part_bytes: usize) -> Self {
        let mut delimiter = b"--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        PartStream {
            delimiter,
            max_part_bytes,
            buf: Vec::new(),
            line_start: true,
            scan_from: 0,
            state: State::Seek,
            emitted: 0,
            part_limit: None,
            whole_body: false,
        }
    }

    /// A splitter for a response's `Content-Type` header.
    pub fn from_content_type(content_type: &str, max_part_bytes: usize) -> Result<Self, WireError> {
        Ok(Self::new(&boundary(content_type)?, max_part_bytes))
    }

    /// Bytes held while waiting for the rest of a part.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next bytes of the stream; returns the parts they completed, in order. On an
    /// error (a part or its headers over the bound) the parts completed before it in this
    /// call are lost with it, the held bytes are dropped and the splitter resynchronises on
    /// the next boundary line.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Part>, WireError> {
        let mut parts = Vec::new();
        for slice in bytes.chunks(FEED_BYTES) {
            self.buf.extend_from_slice(slice);
            if let Err(e) = self.run(&mut parts) {
                self.reset();
                return Err(e);
            }
        }
        Ok(parts)
    }

    /// The stream (or the whole body) has ended: a part still open ends here, at the last
    /// boundary-looking bytes or at the end. The splitter is empty afterwards.
    pub fn finish(&mut self) -> Result<Option<Part>, WireError> {
        let state = std::mem::replace(&mut self.state, State::Seek);
        let part = match state {
            State::Body(mut part) => {
                let end = match self.scan() {
                    Scan::Found(p) | Scan::Partial(p) => p,
                    Scan::None => self.buf.len(),
                };
                part.body = trim_line_end(&self.buf[..end]).to_vec();
                if part.body.len() > self.max_part_bytes {
                    self.reset();
                    return Err(WireError::PartTooLarge {
                        limit: self.max_part_bytes,
                    });
                }
                Some(part)
            }
            State::Seek | State::Headers => None,
        };
        self.reset();
        Ok(part)
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.line_start = true;
        self.scan_from = 0;
        self.state = State::Seek;
    }

    fn drain(&mut self, k: usize) {
        if k == 0 {
            return;
        }
        let k = k.min(self.buf.len());
        self.line_start = self.buf[k - 1] == b'\n';
        self.buf.drain(..k);
        self.scan_from = self.scan_from.saturating_sub(k);
    }

    /// Advances the state machine as far as the buffered bytes allow.
    fn run(&mut self, parts: &mut Vec<Part>) -> Result<(), WireError> {
        loop {
            let progressed = match self.state {
                State::Seek => self.seek(),
                State::Headers => self.headers()?,
                State::Body(_) => {
                    let done = self.body()?;
                    if let Some(part) = done {
                        self.emitted += 1;
                        if let Some(limit) = self.part_limit
                            && self.emitted > limit
                        {
                            return Err(WireError::TooManyParts { limit });
                        }
                        parts.push(part);
                        true
                    } else {
                        false
                    }
                }
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Seek: skip to just after the next boundary line. Returns whether it moved on.
    fn seek(&mut self) -> bool {
        match self.scan() {
            Scan::Found(p) => {
                let after = p + self.delimiter.len();
                match self.buf[after..].iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        let closing = self.buf[after..].starts_with(b"--");
                        self.drain(after + i + 1);
                        if !closing {
                            self.state = State::Headers;
                        }
                        true
                    }
                    None if self.buf.len() - after > MAX_BOUNDARY_LINE_PADDING => {
                        // Not a boundary line after all; look past it.
                        self.drain(p + 1);
                        true
                    }
                    None => {
                        self.drain(p);
                        false
                    }
                }
            }
            Scan::Partial(p) => {
                self.drain(p);
                false
            }
            Scan::None => {
                self.drain(self.buf.len());
                false
            }
        }
    }

    /// Headers: read them once the blank line that ends them is here.
    fn headers(&mut self) -> Result<bool, WireError> {
        let mut part = Part::default();
        let mut start = 0;
        loop {
            let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_HEADER_BYTES {
                    return Err(WireError::HeadersTooLarge {
                        limit: MAX_HEADER_BYTES,
                    });
                }
                return Ok(false);
            };
            let end = start + i;
            let line = trim_line_end(&self.buf[start..end]);
            if end > MAX_HEADER_BYTES {
                return Err(WireError::HeadersTooLarge {
                    limit: MAX_HEADER_BYTES,
                });
            }
            if line.is_empty() {
                self.drain(end + 1);
                break;
            }
            if self.is_delimiter_text(line) {
                // A part with no headers and no body: the boundary line is the next one.
                self.drain(start);
                self.state = State::Seek;
                return Ok(true);
            }
            read_header(&mut part, line);
            start = end + 1;
        }
        if let Some(len) = part.content_length
            && len > self.max_part_bytes
        {
            if !self.whole_body {
                return Err(WireError::PartTooLarge {
                    limit: self.max_part_bytes,
                });
            }
            part.content_length = None;
        }
        self.scan_from = 0;
        self.state = State::Body(part);
        Ok(true)
    }

    /// Body: the finished part, once its end is known.
    fn body(&mut self) -> Result<Option<Part>, WireError> {
        let declared = match &self.state {
            State::Body(part) => part.content_length,
            _ => None,
        };
        // Trust the declared length unless the byte after it says otherwise.
        let end = match declared {
            // A stream device writes the next boundary only with its next event: do not wait
            // for it. A whole body is all here; its end is judged in `finish`.
            Some(len) if self.buf.len() == len && !self.whole_body => Some((len, len)),
            Some(len) if self.buf.len() > len && matches!(self.buf[len], b'\r' | b'\n' | b'-') => {
                Some((len, len))
            }
            Some(len) if self.buf.len() <= len => return Ok(None),
            _ => match self.scan() {
                Scan::Found(p) => Some((trim_line_end(&self.buf[..p]).len(), p)),
                Scan::Partial(p) => {
                    self.scan_from = p;
                    None
                }
                Scan::None => {
                    self.scan_from = self.buf.len();
                    None
                }
            },
        };
        let Some((body_end, consumed)) = end else {
            if self.buf.len() > self.max_part_bytes.saturating_add(self.delimiter.len() + 4) {
                return Err(WireError::PartTooLarge {
                    limit: self.max_part_bytes,
                });
            }
            return Ok(None);
        };
        if body_end > self.max_part_bytes {
            return Err(WireError::PartTooLarge {
                limit: self.max_part_bytes,
            });
        }
        let State::Body(mut part) = std::mem::replace(&mut self.state, State::Seek) else {
            return Ok(None);
        };
        part.body = self.buf[..body_end].to_vec();
        self.drain(consumed);
        Ok(Some(part))
    }

    /// The next place a boundary line starts (at a line start), from `scan_from` on.
    fn scan(&self) -> Scan {
        let d = &self.delimiter;
        let mut p = self.scan_from;
        while p <= self.buf.len() {
            let at_line_start = if p == 0 {
                self.line_start
            } else {
                self.buf[p - 1] == b'\n'
            };
            if at_line_start {
                let rest = &self.buf[p..];
                let k = rest.len().min(d.len());
                if rest[..k].eq_ignore_ascii_case(&d[..k]) {
                    if rest.len() <= d.len() {
                        return Scan::Partial(p);
                    }
                    match rest[d.len()] {
                        b'\r' | b'\n' | b' ' | b'\t' => return Scan::Found(p),
                        b'-' => match rest.get(d.len() + 1) {
                            None => return Scan::Partial(p),
                            Some(b'-') => return Scan::Found(p),
                            Some(_) => {}
                        },
                        _ => {}
                    }
                }
            }
            // Next line start.
            match self.buf[p..].iter().position(|&b| b == b'\n') {
                Some(i) => p += i + 1,
                None => break,
            }
        }
        Scan::None
    }

    /// Whether a whole line is a boundary line.
    fn is_delimiter_text(&self, line: &[u8]) -> bool {
        let d = &self.delimiter;
        line.len() >= d.len()
            && line[..d.len()].eq_ignore_ascii_case(d)
            && line[d.len()..]
                .iter()
                .all(|&b| matches!(b, b'-' | b' ' | b'\t'))
    }
}

/// `bytes` without one trailing LF or CRLF.
fn trim_line_end(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

fn read_header(part: &mut Part, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let Some((name, value)) = text.split_once(':') else {
        return;
    };
    let value = value.trim();
    match name.trim().to_ascii_lowercase().as_str() {
        "content-disposition" => {
            if let Some((_, params)) = value.split_once(';') {
                part.name = param(params, "name");
                part.filename = param(params, "filename");
            }
        }
        "content-type" => part.content_type = Some(value.to_string()),
        "content-length" => part.content_length = value.parse::<usize>().ok(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HIK_CT: &str = "multipart/form-data; boundary=mime_boundary";

    #[test]
    fn the_boundary_comes_from_the_content_type_quoted_or_not() {
        assert_eq!(boundary(HIK_CT).as_deref(), Ok("mime_boundary"));
        assert_eq!(
            boundary("multipart/mixed; charset=utf-8; boundary=\"a b;c\"").as_deref(),
            Ok("a b;c")
        );
        assert_eq!(
            boundary("Multipart/Form-Data;Boundary=X").as_deref(),
            Ok("X")
        );
        assert_eq!(
            boundary("application/json"),
            Err(WireError::UnexpectedContentType)
        );
        assert_eq!(boundary("multipart/mixed"), Err(WireError::NoBoundary));
        assert_eq!(
            boundary("multipart/mixed; boundary=\"\""),
            Err(WireError::NoBoundary)
        );
    }

    #[test]
    fn a_body_whose_boundary_case_differs_from_the_header_parses() {
        let body = b"--MIME_boundary\r\nContent-Disposition: form-data; name=\"event_log\"\r\n\
            Content-Type: application/json\r\n\r\n{\"a\":1}\r\n--MIME_boundary\r\n\
            Content-Disposition: form-data; name=\"Picture\"; filename=\"p.jpg\"\r\n\
            Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\r\n\r\n\xff\xd9\r\n--MIME_boundary--\r\n";
        let parts = parse(HIK_CT, body).expect("parts");
        assert_eq!(parts.len(), 2);
        assert!(parts[0].is_named("EVENT_LOG"));
        assert_eq!(parts[0].body, b"{\"a\":1}");
        assert_eq!(parts[1].filename.as_deref(), Some("p.jpg"));
        assert_eq!(parts[1].media_type(), "image/jpeg");
        assert_eq!(parts[1].body, b"\xff\xd8\xff\r\n\r\n\xff\xd9");
    }

    #[test]
    fn a_content_type_without_a_boundary_takes_the_bodys_first_line() {
        let body = b"\r\n--xYz\r\nContent-Type: text/plain\r\n\r\none\r\n--xYz--\r\n";
        for ct in ["multipart/form-data", "", "text/plain"] {
            let parts = parse(ct, body).expect(ct);
            assert_eq!(parts[0].body, b"one", "{ct:?}");
        }
        assert_eq!(
            parse("multipart/form-data", b"one"),
            Err(WireError::NoBoundary)
        );
        assert_eq!(parse("", b"--\r\n"), Err(WireError::UnexpectedContentType));
    }

    #[test]
    fn bare_line_feeds_a_preamble_and_a_missing_closing_line_are_tolerated() {
        let body = b"junk before\n--b\nContent-Type: text/plain\n\none\n--b\n\ntwo\n";
        let parts = parse("multipart/mixed; boundary=b", body).expect("parts");
        let bodies: Vec<&[u8]> = parts.iter().map(|p| p.body.as_slice()).collect();
        assert_eq!(bodies, [&b"one"[..], &b"two"[..]]);
        // No line end after the last boundary either.
        let body = b"--b\r\n\r\nthree\r\n--b";
        let parts = parse("multipart/mixed; boundary=b", body).expect("parts");
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].body, b"three");
    }

    #[test]
    fn a_boundary_inside_a_line_or_as_a_prefix_of_a_longer_word_is_content() {
        let body = b"--b\r\n\r\nx --b y\r\n--bb\r\nz\r\n--b--\r\n";
        let parts = parse("multipart/mixed; boundary=b", body).expect("parts");
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].body, b"x --b y\r\n--bb\r\nz");
    }

    #[test]
    fn a_declared_length_ends_a_part_without_waiting_for_the_next_boundary() {
        let mut s = PartStream::new("myboundary", 1024);
        let first = s
            .push(b"--myboundary\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nHeartbeat")
            .expect("ok");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].body, b"Heartbeat");
        let next = s
            .push(b"\r\n\r\n--myboundary\r\nContent-Length: 3\r\n\r\nabc\r\n")
            .expect("ok");
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].body, b"abc");
    }

    #[test]
    fn a_wrong_declared_length_falls_back_to_the_boundary() {
        let body = b"--b\r\nContent-Length: 2\r\n\r\nhello\r\n--b--";
        let parts = parse("multipart/mixed; boundary=b", body).expect("parts");
        assert_eq!(parts[0].body, b"hello");
        let beyond = b"--b\r\nContent-Length: 999\r\n\r\nhello\r\n--b--";
        let parts = parse("multipart/mixed; boundary=b", beyond).expect("parts");
        assert_eq!(parts[0].body, b"hello");
    }

    #[test]
    fn a_stream_split_at_every_byte_yields_the_same_parts() {
        let stream: &[u8] = b"--MIME_boundary\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n\
            {\"a\":1}\r\n--MIME_boundary\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8--MIME\xff\xd9\r\n\
            --MIME_boundary\r\nContent-Type: application/json\r\n\r\n{\"b\":2}\r\n--MIME_boundary\r\n";
        let whole = {
            let mut s = PartStream::new("MIME_boundary", 1024);
            s.push(stream).expect("ok")
        };
        assert_eq!(whole.len(), 3);
        for split in 1..stream.len() {
            let mut s = PartStream::new("mime_boundary", 1024);
            let mut parts = s.push(&stream[..split]).expect("ok");
            parts.extend(s.push(&stream[split..]).expect("ok"));
            assert_eq!(parts, whole, "split at {split}");
        }
        for chunk in [1, 2, 3, 7] {
            let mut s = PartStream::new("MIME_boundary", 1024);
            let mut parts = Vec::new();
            for piece in stream.chunks(chunk) {
                parts.extend(s.push(piece).expect("ok"));
            }
            assert_eq!(parts, whole, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_part_over_the_bound_is_an_error_and_the_stream_recovers() {
        let mut s = PartStream::new("b", 16);
        let big = s.push(b"--b\r\n\r\n0123456789abcdef0123456789");
        assert_eq!(big, Err(WireError::PartTooLarge { limit: 16 }));
        assert!(s.buffered() <= 16 + 8);
        let declared = s.push(b"--b\r\nContent-Length: 17\r\n\r\n");
        assert_eq!(declared, Err(WireError::PartTooLarge { limit: 16 }));
        let after = s
            .push(b"\r\n--b\r\n\r\nsmall\r\n--b\r\n")
            .expect("recovered");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].body, b"small");
        // Endless headers are bounded too.
        let mut s = PartStream::new("b", 16);
        let endless = [
            b"--b\r\n".as_slice(),
            [b'x'; MAX_HEADER_BYTES + 1].as_slice(),
        ]
        .concat();
        let headers = s.push(&endless);
        assert!(matches!(headers, Err(WireError::HeadersTooLarge { .. })));
    }

    #[test]
    fn a_body_of_many_empty_parts_is_refused() {
        let body = "--b\r\n\r\n\r\n".repeat(MAX_PARTS + 1);
        assert_eq!(
            parse("multipart/mixed; boundary=b", body.as_bytes()),
            Err(WireError::TooManyParts { limit: MAX_PARTS })
        );
        assert_eq!(
            parse("multipart/mixed; boundary=b", b"no boundary here"),
            Err(WireError::NoParts)
        );
    }

    proptest! {
        #[test]
        fn the_parser_never_panics_on_arbitrary_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            ct in "multipart/(mixed|form-data); boundary=(b|MIME_boundary|x-y)",
        ) {
            let _ = parse(&ct, &body);
        }

        #[test]
        fn the_splitter_never_panics_and_stays_bounded(
            chunks in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![
                        Just(b'-'), Just(b'\r'), Just(b'\n'), Just(b'b'), Just(b'B'),
                        Just(b':'), any::<u8>()
                    ],
                    0..300,
                ),
                0..20,
            ),
        ) {
            let mut s = PartStream::new("b", 64);
            for chunk in &chunks {
                if let Ok(parts) = s.push(chunk) {
                    for part in parts {
                        prop_assert!(part.body.len() <= 64);
                    }
                }
                prop_assert!(s.buffered() <= 64 + MAX_HEADER_BYTES + 300 + 8);
            }
            let _ = s.finish();
            prop_assert_eq!(s.buffered(), 0);
        }
    }
}
