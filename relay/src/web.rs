//! The web UI's files, built into the relay (`web/src/` in the repository), served on the same
//! TLS port as the WebSocket endpoint by a relay told to ([`crate::Config::serve_web`]: the
//! relay `agent-host up` runs on the person's own machine is), so a phone needs nothing from
//! anywhere else.
//!
//! Every answer carries a Content-Security-Policy that lets the page load scripts and styles
//! from this origin only and connect to this origin or a relay over `wss:`/`https:` (the one
//! its pairing link names), and is never framed or sniffed. The
//! pairing link's fragment (its secret) is never sent to the server by a browser; the page
//! also drops it from the address bar once read.

/// The policy on every page: own scripts only; no framing, no plugins, no forms posting
/// anywhere, no `<base>` tricks. `connect-src` names the page's own `wss://` origin (for
/// browsers whose `'self'` does not cover WebSockets) and any `wss:`/`https:` one: a pairing
/// link may name a relay apart from the page, and the page reaches it there (its event-stream
/// fallback too). Everything the page exchanges with a relay is signed end to end, and no
/// script but the page's own runs to send anything elsewhere. Styles may also be inline:
/// the terminal (xterm.js) measures the font and writes its rules into `<style>` elements it
/// makes; a style cannot run code or sign, and the page puts nothing from the host into markup
/// (text only), so there is no markup for a hostile style to be injected through.
pub fn content_security_policy(host: Option<&str>) -> String {
    let wss = host.map(|h| format!(" wss://{h}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; \
         connect-src 'self'{wss} wss: https:; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// The request's `Host` if it is a plain host name or address with an optional port (anything
/// else is left out of the policy rather than echoed into a header).
pub fn plain_host(host: &[u8]) -> Option<&str> {
    let host = std::str::from_utf8(host).ok()?;
    protocol::link::plain_host(host).then_some(host)
}

/// One file of the UI.
#[derive(Debug, Clone)]
pub struct File {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: std::borrow::Cow<'static, [u8]>,
}

const HTML: &str = "text/html; charset=utf-8";
const SCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the UI: its address, its type, and its bytes as built in. The vendored
/// xterm.js (`web/src/vendor/`, MIT, its licence beside it) is the npm package's own file, as
/// `web/package-lock.json` pins it; a web test checks that the two are the same bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("/index.html", HTML, include_bytes!("../../web/src/index.html")),
    ("/app.js", SCRIPT, include_bytes!("../../web/src/app.js")),
    ("/ui.js", SCRIPT, include_bytes!("../../web/src/ui.js")),
    ("/pairing.js", SCRIPT, include_bytes!("../../web/src/pairing.js")),
    ("/host-screen.js", SCRIPT, include_bytes!("../../web/src/host-screen.js")),
    ("/inbox.js", SCRIPT, include_bytes!("../../web/src/inbox.js")),
    ("/sync-state.js", SCRIPT, include_bytes!("../../web/src/sync-state.js")),
    ("/store.js", SCRIPT, include_bytes!("../../web/src/store.js")),
    ("/terminal.js", SCRIPT, include_bytes!("../../web/src/terminal.js")),
    ("/device.js", SCRIPT, include_bytes!("../../web/src/device.js")),
    ("/protocol.js", SCRIPT, include_bytes!("../../web/src/protocol.js")),
    ("/noise.js", SCRIPT, include_bytes!("../../web/src/noise.js")),
    ("/channel.js", SCRIPT, include_bytes!("../../web/src/channel.js")),
    ("/notify.js", SCRIPT, include_bytes!("../../web/src/notify.js")),
    ("/sw.js", SCRIPT, include_bytes!("../../web/src/sw.js")),
    ("/style.css", CSS, include_bytes!("../../web/src/style.css")),
    ("/vendor/xterm.mjs", SCRIPT, include_bytes!("../../web/src/vendor/xterm.mjs")),
    ("/vendor/xterm.css", CSS, include_bytes!("../../web/src/vendor/xterm.css")),
];

/// The variable that makes the relay read the UI's files from a directory (a checkout's
/// `web/src`) at every request instead of the built-in copies: for working on the page without
/// rebuilding. Only the files the relay has built in are served from it.
pub const WEB_DIR_VARIABLE: &str = "AGENT_BRIDGE_WEB_DIR";

/// The file at `path` (the request target without its query), if there is one. `/` is the
/// app, and so is `/pair`, which the pairing link opens.
pub fn file(path: &str) -> Option<File> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = match path {
        "/" | "/pair" => "/index.html",
        other => other,
    };
    let (name, content_type, built_in) = FILES.iter().find(|(name, ..)| *name == path)?;
    let body = match std::env::var_os(WEB_DIR_VARIABLE) {
        Some(dir) => std::fs::read(std::path::Path::new(&dir).join(&name[1..])).ok()?.into(),
        None => (*built_in).into(),
    };
    Some(File { content_type, body })
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
        assert!(csp.contains("connect-src 'self' wss://192.168.1.5:7443 wss: https:;"), "{csp}");
        for bad in [&b"evil.com\r\nSet-Cookie: x"[..], b"a b", b"", b"x;y"] {
            assert_eq!(plain_host(bad), None);
        }
    }

    /// Every file of `web/src` is served: a module left off the list would break the page
    /// with a 404 that only a browser test would notice.
    #[test]
    fn every_file_of_the_ui_is_built_in() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/src");
        let mut missing = Vec::new();
        for dir in [src.clone(), src.join("vendor")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let served = path
                    .extension()
                    .is_some_and(|e| e == "js" || e == "mjs" || e == "css" || e == "html");
                if !served {
                    continue;
                }
                let address = format!("/{}", path.strip_prefix(&src).unwrap().display());
                if !FILES.iter().any(|(p, _, _)| *p == address) {
                    missing.push(address);
                }
            }
        }
        assert!(missing.is_empty(), "not served by the relay: {missing:?}");
    }
}
