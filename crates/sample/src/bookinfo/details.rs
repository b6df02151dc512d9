//! `details`: the book's bibliographic data (the original is a Ruby service).

use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use super::id_segment;
use crate::reply::{self, Body};
use crate::server::{ConnInfo, Handler};

pub struct Details;

impl Handler for Details {
    async fn handle(&self, req: Request<Incoming>, _conn: ConnInfo) -> Response<Body> {
        let path = req.uri().path();
        if req.method() != Method::GET {
            return reply::not_found();
        }
        if path == "/health" {
            return reply::health();
        }
        match id_segment(path, "/details/") {
            Some(id) => details(id),
            None => reply::not_found(),
        }
    }
}

fn details(id: &str) -> Response<Body> {
    let Ok(id) = id.parse::<i64>() else {
        return reply::error(StatusCode::BAD_REQUEST, "please provide numeric product id");
    };
    reply::json(
        StatusCode::OK,
        &json!({
            "id": id,
            "author": "William Shakespeare",
            "year": 1595,
            "type": "paperback",
            "pages": 200,
            "publisher": "PublisherA",
            "language": "English",
            "ISBN-10": "1234567890",
            "ISBN-13": "123-1234567890",
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestServer, get_json};

    #[tokio::test]
    async fn details_json_and_bad_id() {
        let server = TestServer::start(Details).await;
        let (status, body) = get_json(&server.url("/details/7")).await;
        assert_eq!(status, 200);
        assert_eq!(body["id"], 7);
        assert_eq!(body["author"], "William Shakespeare");
        assert_eq!(body["year"], 1595);
        assert_eq!(body["type"], "paperback");
        assert_eq!(body["pages"], 200);
        assert_eq!(body["publisher"], "PublisherA");
        assert_eq!(body["language"], "English");
        assert_eq!(body["ISBN-10"], "1234567890");
        assert_eq!(body["ISBN-13"], "123-1234567890");

        let (status, body) = get_json(&server.url("/details/abc")).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "please provide numeric product id");

        let (status, body) = get_json(&server.url("/health")).await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "Healthy");
    }
}
