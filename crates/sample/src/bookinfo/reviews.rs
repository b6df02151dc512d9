//! `reviews`: two reviews of the book, with stars from `ratings` in v2
//! (black) and v3 (red). The original is a Java service; its response shape,
//! timeouts and error texts are what Istio's tasks observe, so they are kept.

use std::time::Duration;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Serialize;
use serde_json::Value;

use super::id_segment;
use crate::client::{Client, propagated_headers};
use crate::reply::{self, Body};
use crate::server::{ConnInfo, Handler};

const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// How a version shows stars. The timeouts are the original's: Istio's
/// fault-injection task depends on v2 waiting 10 s and v3 only 2.5 s.
struct Stars {
    color: &'static str,
    timeout: Duration,
}

pub struct Reviews {
    client: Client,
    ratings_url: String,
    podname: String,
    clustername: String,
    stars: Option<Stars>,
}

impl Reviews {
    /// `version` picks the behaviour: "v2" and "v3" fetch ratings, anything
    /// else behaves like v1. `clustername` is reported as the string "null"
    /// when unset, as the original does.
    pub fn new(
        version: &str,
        client: Client,
        ratings_url: String,
        podname: String,
        clustername: Option<String>,
    ) -> Reviews {
        let stars = match version {
            "v2" => Some(Stars {
                color: "black",
                timeout: Duration::from_secs(10),
            }),
            "v3" => Some(Stars {
                color: "red",
                timeout: Duration::from_millis(2500),
            }),
            _ => None,
        };
        Reviews {
            client,
            ratings_url,
            podname,
            clustername: clustername.unwrap_or_else(|| "null".to_owned()),
            stars,
        }
    }

    async fn reviews(&self, req: &Request<Incoming>, id: i64) -> Response<Body> {
        let mut ratings = None;
        if let Some(stars) = &self.stars {
            let fetched = self.fetch_ratings(req, id, stars.timeout).await;
            ratings = Some((stars.color, fetched));
        }
        let reviews = REVIEWS.map(|(reviewer, text)| Review {
            reviewer,
            text,
            rating: ratings.as_ref().map(|(color, fetched)| {
                match fetched.as_ref().and_then(|r| stars_of(r, reviewer)) {
                    Some(stars) => Rating::Stars { stars, color },
                    None => Rating::Error {
                        error: RATINGS_UNAVAILABLE,
                    },
                }
            }),
        });
        reply::json(
            StatusCode::OK,
            &ReviewsReply {
                id: id.to_string(),
                podname: &self.podname,
                clustername: &self.clustername,
                reviews,
            },
        )
    }

    /// The ratings JSON, or `None` on any failure: the page then says ratings
    /// are unavailable rather than failing the reviews.
    async fn fetch_ratings(
        &self,
        req: &Request<Incoming>,
        id: i64,
        timeout: Duration,
    ) -> Option<Value> {
        let url = format!("{}/ratings/{id}", self.ratings_url);
        let headers = propagated_headers(req.headers());
        match self.client.get(&url, headers, timeout).await {
            Ok(fetched) if fetched.status == StatusCode::OK => {
                serde_json::from_slice(&fetched.body).ok()
            }
            Ok(fetched) => {
                tracing::warn!(%url, status = %fetched.status, "ratings answered with an error");
                None
            }
            Err(e) => {
                tracing::warn!(%url, "ratings unreachable: {}", crate::client::describe(&e));
                None
            }
        }
    }
}

fn stars_of(ratings: &Value, reviewer: &str) -> Option<i64> {
    ratings.get("ratings")?.get(reviewer)?.as_i64()
}

#[derive(Serialize)]
struct ReviewsReply<'a> {
    id: String,
    podname: &'a str,
    clustername: &'a str,
    reviews: [Review; 2],
}

#[derive(Serialize)]
struct Review {
    reviewer: &'static str,
    text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rating: Option<Rating>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Rating {
    Stars { stars: i64, color: &'static str },
    Error { error: &'static str },
}

impl Handler for Reviews {
    async fn handle(&self, req: Request<Incoming>, _conn: ConnInfo) -> Response<Body> {
        if req.method() != Method::GET {
            return reply::not_found();
        }
        let path = req.uri().path();
        if path == "/health" {
            return reply::health();
        }
        let Some(id) = id_segment(path, "/reviews/") else {
            return reply::not_found();
        };
        match id.parse::<i64>() {
            Ok(id) => self.reviews(&req, id).await,
            Err(_) => reply::error(StatusCode::BAD_REQUEST, "please provide numeric product id"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bookinfo::ratings::Ratings;
    use crate::testutil::{DeadServer, TestServer, direct_client, get_json};

    async fn reviews_server(version: &str, ratings_url: String) -> TestServer {
        TestServer::start(Reviews::new(
            version,
            direct_client(),
            ratings_url,
            "reviews-test-pod".to_owned(),
            None,
        ))
        .await
    }

    #[tokio::test]
    async fn v1_has_no_ratings() {
        // v1 must not call ratings at all: point it somewhere that would fail.
        let dead = DeadServer::start().await;
        let server = reviews_server("v1", dead.url.clone()).await;
        let (status, body) = get_json(&server.url("/reviews/0")).await;
        assert_eq!(status, 200);
        assert_eq!(body["id"], "0");
        assert_eq!(body["podname"], "reviews-test-pod");
        assert_eq!(body["clustername"], "null");
        let reviews = body["reviews"].as_array().expect("reviews array");
        assert_eq!(reviews.len(), 2);
        assert_eq!(reviews[0]["reviewer"], "Reviewer1");
        assert_eq!(reviews[0]["text"], REVIEWS[0].1);
        assert_eq!(reviews[1]["reviewer"], "Reviewer2");
        assert_eq!(reviews[1]["text"], REVIEWS[1].1);
        assert!(reviews.iter().all(|r| r.get("rating").is_none()));
    }

    #[tokio::test]
    async fn v2_black_and_v3_red_stars_from_ratings() {
        let ratings = TestServer::start(Ratings).await;
        for (version, color) in [("v2", "black"), ("v3", "red")] {
            let server = reviews_server(version, ratings.url("")).await;
            let (status, body) = get_json(&server.url("/reviews/0")).await;
            assert_eq!(status, 200, "{version}");
            let reviews = &body["reviews"];
            assert_eq!(
                reviews[0]["rating"],
                serde_json::json!({ "stars": 5, "color": color })
            );
            assert_eq!(
                reviews[1]["rating"],
                serde_json::json!({ "stars": 4, "color": color })
            );
        }
    }

    #[tokio::test]
    async fn ratings_down_gives_the_error_text() {
        let dead = DeadServer::start().await;
        let server = reviews_server("v3", dead.url.clone()).await;
        let (status, body) = get_json(&server.url("/reviews/0")).await;
        assert_eq!(status, 200);
        for review in body["reviews"].as_array().expect("reviews array") {
            assert_eq!(review["rating"]["error"], RATINGS_UNAVAILABLE);
        }
    }

    #[tokio::test]
    async fn ratings_non_200_gives_the_error_text() {
        // A details server answers 404 for /ratings/0.
        let not_ratings = TestServer::start(crate::bookinfo::details::Details).await;
        let server = reviews_server("v2", not_ratings.url("")).await;
        let (status, body) = get_json(&server.url("/reviews/0")).await;
        assert_eq!(status, 200);
        for review in body["reviews"].as_array().expect("reviews array") {
            assert_eq!(review["rating"]["error"], RATINGS_UNAVAILABLE);
        }
    }
}
