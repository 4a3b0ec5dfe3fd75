//! fetch: `GET /fetch?url=URL` fetches URL (taken as it is, up to the end
//! of the request target) and answers with the upstream status, content
//! type and body; `502` if the request fails (for instance when the host is
//! not in the site's `outbound_hosts`).
use terrafirma_guest::http::{StatusCode, header};
use terrafirma_guest::{Request, Response, client, text};

fn fetch(request: Request) -> Response {
    let target = request.uri().to_string();
    let Some((_, url)) = target.split_once("?url=") else {
        return text(StatusCode::BAD_REQUEST, "usage: /fetch?url=http://host/path\n");
    };
    match client::get(url) {
        Ok(upstream) => {
            let mut response = Response::new(upstream.body().clone());
            *response.status_mut() = upstream.status();
            if let Some(content_type) = upstream.headers().get(header::CONTENT_TYPE) {
                response.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
            }
            response
        }
        Err(error) => {
            terrafirma_guest::debug(&format!("fetch {url}: {error}"));
            text(StatusCode::BAD_GATEWAY, "fetch: upstream request failed\n")
        }
    }
}

terrafirma_guest::main!(fetch);
