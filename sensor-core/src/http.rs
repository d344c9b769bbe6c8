//! The head of an HTTP/1 request, as a local TLS server read it (the `SSL_read` uprobe): only
//! its request line, without the query, and its User-Agent are kept, never another header, a
//! cookie or a body. Pure and bounded: at most [`MAX_LINE`] and [`MAX_USER_AGENT`] bytes of
//! text, from at most the bytes the kernel handed over.

use crate::event::RequestHead;

/// Longest request line kept (method, path, version), in bytes.
pub const MAX_LINE: usize = 256;
/// Longest User-Agent kept, in bytes.
pub const MAX_USER_AGENT: usize = 256;

/// Why bytes are not the head of an HTTP/1 request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("no request line (no CRLF in what was read)")]
    NoLine,
    #[error("not an HTTP request line")]
    NotHttp,
}

/// The HTTP/2 connection preface: the request follows in HPACK, which is not decoded here.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// At most `max` bytes of text, without control characters (invalid UTF-8 replaced).
fn text(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let mut out = String::with_capacity(cut.len());
    for c in String::from_utf8_lossy(cut).chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// Parse the first bytes a server read on a connection.
pub fn parse(bytes: &[u8]) -> Result<RequestHead, HeadError> {
    if bytes.starts_with(H2_PREFACE) {
        return Ok(RequestHead {
            line: "PRI * HTTP/2.0".into(),
            user_agent: None,
            http2: true,
        });
    }
    let mut lines = bytes.split(|&b| b == b'\n');
    let first = lines.next().ok_or(HeadError::NoLine)?;
    if first.len() == bytes.len() {
        return Err(HeadError::NoLine);
    }
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let mut parts = first.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::NotHttp);
    };
    if method.is_empty()
        || !method.iter().all(|b| b.is_ascii_uppercase())
        || !version.starts_with(b"HTTP/1.")
    {
        return Err(HeadError::NotHttp);
    }
    // The path without its query: a query may carry tokens.
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let mut line = text(method, 16);
    line.push(' ');
    line.push_str(&text(path, MAX_LINE - 34));
    line.push(' ');
    line.push_str(&text(version, 16));
    let mut user_agent = None;
    for header in lines {
        let header = header.strip_suffix(b"\r").unwrap_or(header);
        if header.is_empty() {
            break;
        }
        if header.len() > 11 && header[..11].eq_ignore_ascii_case(b"user-agent:") {
            user_agent = Some(text(header[11..].trim_ascii(), MAX_USER_AGENT));
            break;
        }
    }
    Ok(RequestHead {
        line,
        user_agent,
        http2: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_request_line_without_its_query_and_the_user_agent_only() {
        let head = parse(
            b"GET /api/v1/items?token=secret HTTP/1.1\r\nHost: a.test\r\nCookie: s=1\r\n\
              User-Agent: Mozilla/5.0 Chrome/120.0\r\nAccept: */*\r\n\r\nbody",
        )
        .unwrap();
        assert_eq!(head.line, "GET /api/v1/items HTTP/1.1");
        assert_eq!(head.user_agent.as_deref(), Some("Mozilla/5.0 Chrome/120.0"));
        assert!(!head.http2);
    }

    #[test]
    fn http2_is_named_and_its_headers_not_read() {
        let head = parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00").unwrap();
        assert!(head.http2);
        assert_eq!(head.user_agent, None);
    }

    #[test]
    fn anything_else_is_an_error_and_text_is_bounded_and_clean() {
        assert_eq!(parse(b"\x16\x03\x01\x00"), Err(HeadError::NoLine));
        assert_eq!(parse(b"hello there friend\r\n"), Err(HeadError::NotHttp));
        assert_eq!(parse(b"get / HTTP/1.1\r\n"), Err(HeadError::NotHttp));
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 5000));
        long.extend_from_slice(b" HTTP/1.1\r\nUser-Agent: \x1b[31mred");
        long.extend(std::iter::repeat_n(b'b', 5000));
        long.extend_from_slice(b"\r\n\r\n");
        let head = parse(&long).unwrap();
        assert!(head.line.len() <= MAX_LINE, "{}", head.line.len());
        let ua = head.user_agent.unwrap();
        assert!(ua.len() <= MAX_USER_AGENT);
        assert!(!ua.contains('\x1b'));
    }
}
