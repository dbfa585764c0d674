//! Nothing from the request is reflected into a response header or a
//! JavaScript body: a marker put into every parameter and header never comes
//! back (the only request data that may is a validated `redir` in Location).

mod common;

use std::net::SocketAddr;

use hyper::{Method, Request};
use pixeld::http::router::{respond, Role};

const MARK: &str = "zq9marker";

#[test]
fn no_request_data_comes_back_in_headers_or_scripts() {
    let app = common::memory_app();
    let m = MARK;
    let paths = [
        format!("/imptr?id=2766&cachebuster={m}&ancost={m}&t=1&redir=https://evil-{m}.test/"),
        format!("/imptr?id=2766&cachebuster={m}&t=2&redir=https://evil-{m}.test/"),
        format!("/imptr?id={m}&t=1"),
        format!("/clktrb?id=21378&cachebuster={m}&redir=https://evil-{m}.test/"),
        format!("/px?id=7313&t=1&order_id={m}&other={m}&redir=https://www.example.com/{m}"),
        format!("/px?id=8371&t=2&order_id={m}&value={m}"),
        format!("/seg?add=12192&other={m}&t=1&redir=https://www.example.com/{m}"),
        format!("/seg?add_code={m}&member=1&t=2"),
        format!("/nope?{m}"),
        format!("/optout?{m}"),
    ];
    for path in &paths {
        let req = Request::builder()
            .method(Method::GET)
            .uri(path.as_str())
            .header("cookie", format!("uid={m}; other={m}"))
            .header("user-agent", m)
            .header("referer", format!("https://{m}.test/"))
            .header("x-forwarded-for", m)
            .header("x-evil", m)
            .body(())
            .unwrap();
        let (resp, _) = respond(
            &req,
            SocketAddr::from(([127, 0, 0, 1], 9)),
            &app,
            Role::Public,
        );
        for (name, value) in resp.headers() {
            let v = value.to_str().unwrap_or_default();
            assert!(
                !v.contains(m),
                "{path}: header {name} reflects the request: {v}"
            );
        }
        let body = futures_body(resp);
        assert!(
            !body.contains(m),
            "{path}: body reflects the request: {body}"
        );
    }
}

fn futures_body(resp: hyper::Response<pixeld::http::response::Body>) -> String {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}
