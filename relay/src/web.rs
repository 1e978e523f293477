//! The web UI's files, built into the relay (`web/src/` in the repository), served on the same
//! TLS port as the WebSocket endpoint, so a phone needs nothing from anywhere else.
//!
//! Every answer carries a Content-Security-Policy that lets the page load scripts and styles
//! from this origin only and connect only back to it, and is never framed or sniffed. The
//! pairing link's fragment (its secret) is never sent to the server by a browser; the page
//! also drops it from the address bar once read.

/// The policy on every page: own scripts, styles and WebSocket only; no framing, no plugins,
/// no forms posting anywhere, no `<base>` tricks. `connect-src` names the page's own `wss://`
/// origin as well, for browsers whose `'self'` does not cover WebSockets.
pub fn content_security_policy(host: Option<&str>) -> String {
    let wss = host.map(|h| format!(" wss://{h}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{wss}; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// The request's `Host` if it is a plain host name or address with an optional port (anything
/// else is left out of the policy rather than echoed into a header).
pub fn plain_host(host: &[u8]) -> Option<&str> {
    let host = std::str::from_utf8(host).ok()?;
    let plain = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    plain.then_some(host)
}

/// One file of the UI.
#[derive(Debug, Clone, Copy)]
pub struct File {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const INDEX: File = File {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../web/src/index.html"),
};

const fn script(body: &'static [u8]) -> File {
    File { content_type: "text/javascript; charset=utf-8", body }
}

/// The file at `path` (the request target without its query), if there is one. `/` is the
/// app, and so is `/pair`, which the pairing link opens.
pub fn file(path: &str) -> Option<File> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    Some(match path {
        "/" | "/pair" | "/index.html" => INDEX,
        "/app.js" => script(include_bytes!("../../web/src/app.js")),
        "/store.js" => script(include_bytes!("../../web/src/store.js")),
        "/terminal.js" => script(include_bytes!("../../web/src/terminal.js")),
        "/device.js" => script(include_bytes!("../../web/src/device.js")),
        "/protocol.js" => script(include_bytes!("../../web/src/protocol.js")),
        "/style.css" => File {
            content_type: "text/css; charset=utf-8",
            body: include_bytes!("../../web/src/style.css"),
        },
        _ => return None,
    })
}

/// The head of a `200 OK` answer carrying `file`, to a request that named `host`.
pub fn head(file: &File, host: Option<&str>) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {}\r\n\
         X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
         X-Frame-Options: DENY\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        file.content_type,
        file.body.len(),
        content_security_policy(host),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_answers_at_its_paths_and_nothing_else_does() {
        for path in ["/", "/pair", "/pair?x=1", "/app.js", "/style.css", "/protocol.js"] {
            assert!(file(path).is_some(), "{path}");
        }
        for path in ["/../Cargo.toml", "/src/app.js", "/app.js/", "//app.js", "/favicon.ico"] {
            assert!(file(path).is_none(), "{path}");
        }
        assert!(file("/").unwrap().body.starts_with(b"<!doctype html>"));
        assert!(head(&file("/app.js").unwrap(), None).contains("text/javascript"));
        let csp = head(&file("/").unwrap(), plain_host(b"192.168.1.5:7443"));
        assert!(csp.contains("connect-src 'self' wss://192.168.1.5:7443;"), "{csp}");
        for bad in [&b"evil.com\r\nSet-Cookie: x"[..], b"a b", b"", b"x;y"] {
            assert_eq!(plain_host(bad), None);
        }
    }
}
