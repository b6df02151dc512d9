//! The HTML of productpage. The markup follows the original templates
//! (Bootstrap class names, `glyphicon` stars in a `<font color>`), because
//! Istio's tasks and tests recognise the page by those strings. No external
//! assets: a few inline styles stand in for Bootstrap.

use std::fmt::Write;

use serde_json::Value;

const SUMMARY: &str = "Wikipedia Summary: The Comedy of Errors is one of William Shakespeare's early plays. It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play.";

const STYLE: &str = r#"<style>
body { font-family: "Helvetica Neue", Helvetica, Arial, sans-serif; margin: 0; color: #333; }
.navbar { background: #222; color: #9d9d9d; padding: 8px 15px; overflow: hidden; }
.navbar-brand { color: #fff; font-size: 18px; text-decoration: none; line-height: 34px; }
.navbar-right { float: right; }
.navbar-text { color: #ddd; line-height: 34px; margin: 0; }
.navbar-text a { color: #fff; }
.form-control { padding: 6px; margin-left: 4px; }
.btn { padding: 6px 12px; margin-left: 4px; }
.container-fluid { padding: 0 15px; }
.row { display: flex; flex-wrap: wrap; }
.col-md-12 { width: 100%; }
.col-md-6 { width: 50%; box-sizing: border-box; padding: 0 15px; }
.text-center { text-align: center; }
.text-primary { color: #337ab7; }
blockquote { border-left: 5px solid #eee; margin: 0 0 20px; padding: 10px 20px; }
blockquote small { display: block; color: #777; }
dt { font-weight: bold; }
.glyphicon-star::before { content: "\2605"; }
.glyphicon-star-empty::before { content: "\2606"; }
</style>"#;

fn head(out: &mut String) {
    out.push_str("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\n");
    out.push_str("<title>Bookinfo Sample</title>\n");
    out.push_str(STYLE);
    out.push_str("\n</head>\n<body>\n");
}

pub fn index() -> String {
    let mut out = String::with_capacity(2048);
    head(&mut out);
    out.push_str(
        r#"<nav class="navbar navbar-inverse navbar-static-top"><a class="navbar-brand" href="/">BookInfo Sample</a></nav>
<div class="container-fluid">
<h3>Hello! This is a simple bookstore application consisting of four services: productpage, details, reviews and ratings.</h3>
<h4>Click on one of the links below to auto generate a request to the backend as a real user or a tester</h4>
<p><a href="/productpage?u=normal">Normal user</a></p>
<p><a href="/productpage?u=test">Test user</a></p>
</div>
</body>
</html>
"#,
    );
    out
}

/// `details` and `reviews` are the upstream JSON, `None` when the call failed.
pub fn product_page(
    user: Option<&str>,
    details: Option<&Value>,
    reviews: Option<&Value>,
) -> String {
    let mut out = String::with_capacity(8192);
    head(&mut out);

    out.push_str("<nav class=\"navbar navbar-inverse navbar-static-top\">\n");
    out.push_str("<a class=\"navbar-brand\" href=\"/\">BookInfo Sample</a>\n");
    match user {
        Some(user) => {
            let _ = writeln!(
                out,
                "<p class=\"navbar-text navbar-right\">Signed in as <b>{}</b> (<a href=\"/logout\">sign out</a>)</p>",
                escape(user)
            );
        }
        None => out.push_str(
            r#"<form class="navbar-form navbar-right" method="post" action="/login">
<input type="text" name="username" placeholder="User Name" class="form-control">
<input type="password" name="passwd" placeholder="Password" class="form-control">
<button type="submit" class="btn btn-default">Sign in</button>
</form>
"#,
        ),
    }
    out.push_str("</nav>\n<div class=\"container-fluid\">\n");

    out.push_str("<div class=\"row\"><div class=\"col-md-12\">\n");
    out.push_str("<h3 class=\"text-center text-primary\">The Comedy of Errors</h3>\n");
    let _ = writeln!(out, "<p>Summary: {SUMMARY}</p>");
    out.push_str("</div></div>\n<div class=\"row\">\n<div class=\"col-md-6\">\n");
    render_details(&mut out, details);
    out.push_str("</div>\n<div class=\"col-md-6\">\n");
    render_reviews(&mut out, reviews);
    out.push_str("</div>\n</div>\n</div>\n</body>\n</html>\n");
    out
}

fn render_details(out: &mut String, details: Option<&Value>) {
    let Some(details) = details else {
        out.push_str(
            "<h4 class=\"text-center text-primary\">Error fetching product details!</h4>\n",
        );
        out.push_str("<p>Sorry, product details are currently unavailable for this book.</p>\n");
        return;
    };
    out.push_str("<h4 class=\"text-center text-primary\">Book Details</h4>\n<dl>\n");
    for (label, key) in [
        ("Author", "author"),
        ("Year", "year"),
        ("Type", "type"),
        ("Pages", "pages"),
        ("Publisher", "publisher"),
        ("Language", "language"),
        ("ISBN-10", "ISBN-10"),
        ("ISBN-13", "ISBN-13"),
    ] {
        let _ = writeln!(out, "<dt>{label}:</dt>{}", text(details.get(key)));
    }
    out.push_str("</dl>\n");
}

fn render_reviews(out: &mut String, reviews: Option<&Value>) {
    let Some(reviews) = reviews else {
        out.push_str(
            "<h4 class=\"text-center text-primary\">Error fetching product reviews!</h4>\n",
        );
        out.push_str("<p>Sorry, product reviews are currently unavailable for this book.</p>\n");
        return;
    };
    out.push_str("<h4 class=\"text-center text-primary\">Book Reviews</h4>\n");
    let list = reviews.get("reviews").and_then(Value::as_array);
    for review in list.into_iter().flatten() {
        out.push_str("<blockquote>\n");
        let _ = writeln!(out, "<p>{}</p>", text(review.get("text")));
        let _ = writeln!(out, "<small>{}</small>", text(review.get("reviewer")));
        if let Some(rating) = review.get("rating") {
            render_rating(out, rating);
        }
        out.push_str("</blockquote>\n");
    }
    out.push_str("<dl>\n<dt>Reviews served by:</dt>\n");
    let _ = writeln!(out, "<u>{}</u>", text(reviews.get("podname")));
    if let Some(cluster) = reviews.get("clustername").and_then(Value::as_str)
        && cluster != "null"
    {
        let _ = writeln!(out, "on cluster <u>{}</u>", escape(cluster));
    }
    out.push_str("</dl>\n");
}

fn render_rating(out: &mut String, rating: &Value) {
    if let Some(stars) = rating.get("stars").and_then(Value::as_i64) {
        let stars = stars.clamp(0, 5) as usize;
        let _ = writeln!(out, "<font color=\"{}\">", text(rating.get("color")));
        for _ in 0..stars {
            out.push_str("<span class=\"glyphicon glyphicon-star\"></span>\n");
        }
        for _ in stars..5 {
            out.push_str("<span class=\"glyphicon glyphicon-star-empty\"></span>\n");
        }
        out.push_str("</font>\n");
    } else if let Some(error) = rating.get("error") {
        let _ = writeln!(out, "<p><i>{}</i></p>", text(Some(error)));
    }
}

/// A JSON value as escaped HTML text; absent values render as nothing, as
/// undefined ones do in the original's Jinja templates.
fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => escape(s),
        Some(other) => escape(&other.to_string()),
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn stars_are_clamped_and_errors_shown() {
        let mut out = String::new();
        render_rating(&mut out, &serde_json::json!({"stars": 9, "color": "red"}));
        assert_eq!(out.matches("glyphicon-star\"").count(), 5);
        assert!(!out.contains("star-empty"));
        let mut out = String::new();
        render_rating(&mut out, &serde_json::json!({"error": "down"}));
        assert_eq!(out, "<p><i>down</i></p>\n");
    }
}
