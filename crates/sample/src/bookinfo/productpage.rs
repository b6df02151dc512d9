//! `productpage`: the Bookinfo front end (the original is a Python/Flask app).
//! It calls details and reviews, renders the page, and keeps the signed-in
//! user in a cookie so that it can send `end-user` upstream; Istio's request
//! routing task matches on that header.

use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use url::form_urlencoded;

use super::{Upstreams, page};
use crate::client::{Client, describe, propagated_headers};
use crate::reply::{self, Body};
use crate::server::{ConnInfo, Handler};

/// The original's per-call timeout; with two tries at reviews, a page waits
/// at most about 6 s on a stuck reviews service.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
const REVIEW_TRIES: u32 = 2;
const MAX_FORM_BYTES: usize = 16 * 1024;

pub const TITLE: &str = "The Comedy of Errors";
pub const DESCRIPTION_HTML: &str = "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play.";

pub struct ProductPage {
    client: Client,
    upstreams: Upstreams,
}

/// What an upstream call came to. A failure carries the status to report:
/// the upstream's own when it answered, 503 when it could not be reached.
enum Outcome {
    Ok(Value),
    Failed(StatusCode),
}

impl Outcome {
    fn ok(&self) -> Option<&Value> {
        match self {
            Outcome::Ok(value) => Some(value),
            Outcome::Failed(_) => None,
        }
    }

    fn into_response(self, what: &str) -> Response<Body> {
        match self {
            Outcome::Ok(value) => reply::json(StatusCode::OK, &value),
            Outcome::Failed(status) => reply::error(
                status,
                &format!("Sorry, product {what} are currently unavailable for this book."),
            ),
        }
    }
}

impl ProductPage {
    pub fn new(client: Client, upstreams: Upstreams) -> ProductPage {
        ProductPage { client, upstreams }
    }

    async fn fetch(&self, url: &str, headers: &HeaderMap, tries: u32) -> Outcome {
        let mut failure = StatusCode::SERVICE_UNAVAILABLE;
        for _ in 0..tries {
            match self
                .client
                .get(url, headers.clone(), UPSTREAM_TIMEOUT)
                .await
            {
                Ok(fetched) if fetched.status == StatusCode::OK => {
                    match serde_json::from_slice(&fetched.body) {
                        Ok(value) => return Outcome::Ok(value),
                        Err(e) => {
                            tracing::warn!(%url, "upstream sent invalid JSON: {e}");
                            failure = StatusCode::SERVICE_UNAVAILABLE;
                        }
                    }
                }
                Ok(fetched) => {
                    tracing::warn!(%url, status = %fetched.status, "upstream answered with an error");
                    failure = fetched.status;
                }
                Err(e) => {
                    tracing::warn!(%url, "upstream unreachable: {}", describe(&e));
                    failure = StatusCode::SERVICE_UNAVAILABLE;
                }
            }
        }
        Outcome::Failed(failure)
    }

    async fn details(&self, id: &str, headers: &HeaderMap) -> Outcome {
        let url = format!("{}/details/{id}", self.upstreams.details);
        self.fetch(&url, headers, 1).await
    }

    async fn reviews(&self, id: &str, headers: &HeaderMap) -> Outcome {
        let url = format!("{}/reviews/{id}", self.upstreams.reviews);
        self.fetch(&url, headers, REVIEW_TRIES).await
    }

    async fn ratings(&self, id: &str, headers: &HeaderMap) -> Outcome {
        let url = format!("{}/ratings/{id}", self.upstreams.ratings);
        self.fetch(&url, headers, 1).await
    }

    async fn product_page(&self, req: &Request<Incoming>) -> Response<Body> {
        let user = signed_in_user(req.headers());
        let headers = upstream_headers(req.headers(), user.as_deref());
        let (details, reviews) =
            tokio::join!(self.details("0", &headers), self.reviews("0", &headers));
        reply::html(page::product_page(
            user.as_deref(),
            details.ok(),
            reviews.ok(),
        ))
    }

    async fn api(&self, req: &Request<Incoming>, rest: &str) -> Response<Body> {
        let headers = upstream_headers(req.headers(), signed_in_user(req.headers()).as_deref());
        let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
        if id.is_empty() {
            return reply::not_found();
        }
        match what {
            "" => self.details(id, &headers).await.into_response("details"),
            "reviews" => self.reviews(id, &headers).await.into_response("reviews"),
            "ratings" => self.ratings(id, &headers).await.into_response("ratings"),
            _ => reply::not_found(),
        }
    }
}

impl Handler for ProductPage {
    async fn handle(&self, req: Request<Incoming>, _conn: ConnInfo) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        match (method, path.as_str()) {
            (Method::GET, "/" | "/index.html") => reply::html(page::index()),
            (Method::GET, "/health") => reply::health(),
            (Method::GET, "/productpage") => self.product_page(&req).await,
            (Method::POST, "/login") => login(req).await,
            (Method::GET, "/logout") => {
                reply::redirect_with_cookie("/productpage", "user=; Path=/; Max-Age=0")
            }
            (Method::GET, "/api/v1/products") => reply::json(
                StatusCode::OK,
                &json!([{ "id": 0, "title": TITLE, "descriptionHtml": DESCRIPTION_HTML }]),
            ),
            (Method::GET, path) => match path.strip_prefix("/api/v1/products/") {
                Some(rest) => self.api(&req, rest).await,
                None => reply::not_found(),
            },
            _ => reply::not_found(),
        }
    }
}

/// Headers for every upstream call: the propagated ones, with `end-user`
/// taken from the session cookie when someone is signed in.
fn upstream_headers(incoming: &HeaderMap, user: Option<&str>) -> HeaderMap {
    let mut headers = propagated_headers(incoming);
    if let Some(value) = user.and_then(|u| HeaderValue::from_str(u).ok()) {
        headers.insert("end-user", value);
    }
    headers
}

async fn login(req: Request<Incoming>) -> Response<Body> {
    // Like Flask's request.values, accept the name from the query as well.
    let from_query = req
        .uri()
        .query()
        .and_then(|q| form_value(q.as_bytes(), "username"));
    let body = reply::read_body(req.into_body(), MAX_FORM_BYTES).await;
    let user = body
        .and_then(|b| form_value(&b, "username"))
        .or(from_query)
        .unwrap_or_default();
    let encoded: String = form_urlencoded::byte_serialize(user.as_bytes()).collect();
    reply::redirect_with_cookie("/productpage", &format!("user={encoded}; Path=/"))
}

fn form_value(form: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(form)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The user named by the `user` cookie, if any. The value was written with
/// form encoding, and decoding it as a lone form key undoes exactly that.
fn signed_in_user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix("user="))
        .and_then(|raw| form_urlencoded::parse(raw.as_bytes()).next())
        .map(|(name, _)| name.into_owned())
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::bookinfo::{details::Details, ratings::Ratings, reviews::Reviews};
    use crate::echo::Echo;
    use crate::testutil::{
        DeadServer, TestServer, direct_client, get_json, get_text, http, workload,
    };

    const SUMMARY: &str = "Wikipedia Summary: The Comedy of Errors is one of William Shakespeare's early plays. It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play.";

    /// A whole Bookinfo; the servers stop when it is dropped.
    struct Bookinfo {
        page: TestServer,
        _backends: Vec<TestServer>,
    }

    async fn bookinfo(reviews_version: &str) -> Bookinfo {
        let details = TestServer::start(Details).await;
        let ratings = TestServer::start(Ratings).await;
        let reviews = TestServer::start(Reviews::new(
            reviews_version,
            direct_client(),
            ratings.url(""),
            format!("reviews-{reviews_version}-pod"),
            None,
        ))
        .await;
        let page = productpage(Upstreams {
            details: details.url(""),
            reviews: reviews.url(""),
            ratings: ratings.url(""),
        })
        .await;
        Bookinfo {
            page,
            _backends: vec![details, ratings, reviews],
        }
    }

    async fn productpage(upstreams: Upstreams) -> TestServer {
        TestServer::start(ProductPage::new(direct_client(), upstreams)).await
    }

    #[tokio::test]
    async fn renders_details_and_black_stars_with_v2() {
        let app = bookinfo("v2").await;
        let (status, page) = get_text(&app.page.url("/productpage")).await;
        assert_eq!(status, 200);
        for expected in [
            "<title>Bookinfo Sample</title>",
            "The Comedy of Errors",
            SUMMARY,
            "Book Details",
            "William Shakespeare",
            "1595",
            "paperback",
            "200",
            "PublisherA",
            "English",
            "1234567890",
            "123-1234567890",
            "Book Reviews",
            "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
            "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
            "Reviewer1",
            "Reviewer2",
            "<font color=\"black\">",
            "Reviews served by:",
            "<u>reviews-v2-pod</u>",
            "Sign in",
        ] {
            assert!(page.contains(expected), "missing {expected:?} in\n{page}");
        }
        // 5 + 4 stars, and the one Reviewer2 did not get.
        assert_eq!(
            page.matches("<span class=\"glyphicon glyphicon-star\"></span>")
                .count(),
            9
        );
        assert_eq!(
            page.matches("<span class=\"glyphicon glyphicon-star-empty\"></span>")
                .count(),
            1
        );
        assert!(!page.contains("color=\"red\""));
    }

    #[tokio::test]
    async fn v1_has_no_stars_and_v3_red_ones() {
        let v1 = bookinfo("v1").await;
        let (_, page) = get_text(&v1.page.url("/productpage")).await;
        assert!(page.contains("Book Reviews"));
        assert!(!page.contains("<span class=\"glyphicon"));
        assert!(!page.contains("<font"));

        let v3 = bookinfo("v3").await;
        let (_, page) = get_text(&v3.page.url("/productpage")).await;
        assert!(page.contains("<font color=\"red\">"));
        assert!(page.contains("<u>reviews-v3-pod</u>"));
    }

    #[tokio::test]
    async fn ratings_down_shows_unavailable() {
        let dead = DeadServer::start().await;
        let reviews = TestServer::start(Reviews::new(
            "v2",
            direct_client(),
            dead.url.clone(),
            "pod".to_owned(),
            None,
        ))
        .await;
        let details = TestServer::start(Details).await;
        let page = productpage(Upstreams {
            details: details.url(""),
            reviews: reviews.url(""),
            ratings: dead.url.clone(),
        })
        .await;
        let (status, page) = get_text(&page.url("/productpage")).await;
        assert_eq!(status, 200);
        assert_eq!(
            page.matches("<p><i>Ratings service is currently unavailable</i></p>")
                .count(),
            2
        );
        assert!(!page.contains("<span class=\"glyphicon"));
    }

    #[tokio::test]
    async fn upstreams_down_show_error_texts_with_200() {
        let dead = DeadServer::start().await;
        let page = productpage(Upstreams {
            details: dead.url.clone(),
            reviews: dead.url.clone(),
            ratings: dead.url.clone(),
        })
        .await;
        let (status, page) = get_text(&page.url("/productpage")).await;
        assert_eq!(status, 200);
        for expected in [
            "The Comedy of Errors",
            "Error fetching product details!",
            "Error fetching product reviews!",
            "Sorry, product reviews are currently unavailable for this book.",
        ] {
            assert!(page.contains(expected), "missing {expected:?}");
        }
        assert!(!page.contains("Book Details"));
        assert!(!page.contains("Book Reviews"));
    }

    /// Fails its first request, then answers like reviews v1.
    struct FlakyReviews {
        hits: AtomicU32,
        reviews: Reviews,
    }

    impl Handler for FlakyReviews {
        async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
            if self.hits.fetch_add(1, Ordering::SeqCst) == 0 {
                return reply::error(StatusCode::SERVICE_UNAVAILABLE, "flaky");
            }
            self.reviews.handle(req, conn).await
        }
    }

    #[tokio::test]
    async fn reviews_are_tried_twice() {
        let dead = DeadServer::start().await;
        let flaky = TestServer::start(FlakyReviews {
            hits: AtomicU32::new(0),
            reviews: Reviews::new(
                "v1",
                direct_client(),
                dead.url.clone(),
                "second-try".to_owned(),
                None,
            ),
        })
        .await;
        let page = productpage(Upstreams {
            details: dead.url.clone(),
            reviews: flaky.url(""),
            ratings: dead.url.clone(),
        })
        .await;
        let (_, page) = get_text(&page.url("/productpage")).await;
        assert!(page.contains("Book Reviews"), "{page}");
        assert!(page.contains("<u>second-try</u>"));
    }

    #[tokio::test]
    async fn login_sets_cookie_and_logout_clears_it() {
        let app = bookinfo("v1").await;
        let resp = http()
            .post(app.page.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=jason&passwd=secret")
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), 302);
        assert_eq!(resp.headers()["location"], "/productpage");
        assert_eq!(resp.headers()["set-cookie"], "user=jason; Path=/");

        let resp = http()
            .get(app.page.url("/productpage"))
            .header("cookie", "other=1; user=jason")
            .send()
            .await
            .expect("page");
        let page = resp.text().await.expect("text");
        assert!(page.contains("<b>jason</b>"), "{page}");
        assert!(page.contains("sign out"));
        assert!(!page.contains("action=\"/login\""));

        let resp = http()
            .get(app.page.url("/logout"))
            .send()
            .await
            .expect("logout");
        assert_eq!(resp.status(), 302);
        assert_eq!(resp.headers()["location"], "/productpage");
        let cookie = resp.headers()["set-cookie"].to_str().expect("ascii");
        assert!(cookie.starts_with("user=;") && cookie.contains("Max-Age=0"));
    }

    #[tokio::test]
    async fn user_and_tracing_headers_reach_upstreams() {
        let echo = TestServer::start(Echo::new(workload("echo", "v1"), direct_client())).await;
        let page = productpage(Upstreams {
            details: echo.url(""),
            reviews: echo.url(""),
            ratings: echo.url(""),
        })
        .await;
        for (what, path) in [
            ("details", "/api/v1/products/0"),
            ("reviews", "/api/v1/products/0/reviews"),
            ("ratings", "/api/v1/products/0/ratings"),
        ] {
            let resp = http()
                .get(page.url(path))
                .header("cookie", "user=jason")
                .header("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")
                .header("x-request-id", "abc")
                .header("user-agent", "bookinfo-test")
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), 200);
            let seen: Value = resp.json().await.expect("json");
            assert_eq!(seen["path"], format!("/{what}/0"));
            let headers = &seen["headers"];
            assert_eq!(headers["end-user"], "jason", "{what}");
            assert_eq!(headers["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
            assert_eq!(headers["x-request-id"], "abc");
            assert_eq!(headers["user-agent"], "bookinfo-test");
            assert!(headers.get("cookie").is_none());
        }
    }

    #[tokio::test]
    async fn json_api() {
        let app = bookinfo("v3").await;
        let (status, products) = get_json(&app.page.url("/api/v1/products")).await;
        assert_eq!(status, 200);
        assert_eq!(products[0]["id"], 0);
        assert_eq!(products[0]["title"], TITLE);
        assert_eq!(products[0]["descriptionHtml"], DESCRIPTION_HTML);

        let (status, details) = get_json(&app.page.url("/api/v1/products/0")).await;
        assert_eq!((status, &details["publisher"]), (200, &json!("PublisherA")));
        let (status, reviews) = get_json(&app.page.url("/api/v1/products/0/reviews")).await;
        assert_eq!(status, 200);
        assert_eq!(reviews["reviews"][0]["rating"]["color"], "red");
        let (status, ratings) = get_json(&app.page.url("/api/v1/products/0/ratings")).await;
        assert_eq!((status, &ratings["ratings"]["Reviewer2"]), (200, &json!(4)));

        // The upstream's own error status is passed on.
        let (status, _) = get_json(&app.page.url("/api/v1/products/x")).await;
        assert_eq!(status, 400);

        let dead = DeadServer::start().await;
        let down = productpage(Upstreams {
            details: dead.url.clone(),
            reviews: dead.url.clone(),
            ratings: dead.url.clone(),
        })
        .await;
        for path in ["/0", "/0/reviews", "/0/ratings"] {
            let (status, body) = get_json(&down.url(&format!("/api/v1/products{path}"))).await;
            assert_eq!(status, 503, "{path}");
            assert!(body["error"].is_string());
        }
    }

    #[tokio::test]
    async fn index_and_health() {
        let dead = DeadServer::start().await;
        let page = productpage(Upstreams {
            details: dead.url.clone(),
            reviews: dead.url.clone(),
            ratings: dead.url.clone(),
        })
        .await;
        let (status, index) = get_text(&page.url("/")).await;
        assert_eq!(status, 200);
        assert!(index.contains("<title>Bookinfo Sample</title>"));
        assert!(index.contains("href=\"/productpage?u=normal\""));
        assert!(index.contains("href=\"/productpage?u=test\""));
        let (status, health) = get_json(&page.url("/health")).await;
        assert_eq!((status, &health["status"]), (200, &json!("Healthy")));
    }
}
