//! `ratings`: the stars each reviewer gave (the original is a Node.js service).

use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use super::id_segment;
use crate::reply::{self, Body};
use crate::server::{ConnInfo, Handler};

pub struct Ratings;

impl Handler for Ratings {
    async fn handle(&self, req: Request<Incoming>, _conn: ConnInfo) -> Response<Body> {
        let path = req.uri().path();
        if req.method() != Method::GET {
            return reply::not_found();
        }
        if path == "/health" {
            return reply::health();
        }
        match id_segment(path, "/ratings/") {
            Some(id) => ratings(id),
            None => reply::not_found(),
        }
    }
}

fn ratings(id: &str) -> Response<Body> {
    let Ok(id) = id.parse::<i64>() else {
        return reply::error(StatusCode::BAD_REQUEST, "please provide numeric product ID");
    };
    reply::json(
        StatusCode::OK,
        &json!({ "id": id, "ratings": { "Reviewer1": 5, "Reviewer2": 4 } }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestServer, get_json};

    #[tokio::test]
    async fn ratings_json_and_bad_id() {
        let server = TestServer::start(Ratings).await;
        let (status, body) = get_json(&server.url("/ratings/0")).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({ "id": 0, "ratings": { "Reviewer1": 5, "Reviewer2": 4 } })
        );

        let (status, body) = get_json(&server.url("/ratings/x")).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "please provide numeric product ID");
    }
}
