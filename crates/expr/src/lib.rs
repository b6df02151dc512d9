//! The CEL subset Istio's Telemetry API uses in practice: access-log
//! `filter.expression` (`response.code >= 400`) and metric `tagOverrides`
//! values (`request.method`, `'literal'`). Comparisons of attributes with
//! numbers and strings, joined by `&&`, `||`, `!` and parentheses.
//!
//! A crate of its own (as `duration`) so that validation (`api`) refuses a
//! bad expression naming its field and the proxy evaluates the same
//! grammar, without either depending on the other.
#![forbid(unsafe_code)]

use std::fmt;

/// The attributes an expression may read (Istio's attribute vocabulary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    ResponseCode,
    ResponseGrpcStatus,
    ResponseFlags,
    ResponseDuration,
    RequestMethod,
    RequestPath,
    RequestUrlPath,
    RequestHost,
    RequestProtocol,
    RequestId,
    RequestUserAgent,
    RequestScheme,
    /// `request.headers['name']` (lowercased).
    RequestHeader(String),
    ResponseHeader(String),
    SourcePrincipal,
    ConnectionMtls,
    UpstreamCluster,
}

impl Attr {
    /// Whether a metric series knows the attribute: its value is one of
    /// the standard labels, the same for every request the series counts.
    /// Metric `tagOverrides` may use only these.
    pub fn in_metric_labels(&self) -> bool {
        matches!(
            self,
            Attr::ResponseCode
                | Attr::ResponseGrpcStatus
                | Attr::ResponseFlags
                | Attr::RequestProtocol
                | Attr::SourcePrincipal
                | Attr::ConnectionMtls
        )
    }

    fn from_path(path: &str) -> Option<Attr> {
        Some(match path {
            "response.code" => Attr::ResponseCode,
            "response.grpc_status" => Attr::ResponseGrpcStatus,
            "response.flags" => Attr::ResponseFlags,
            "response.duration" => Attr::ResponseDuration,
            "request.method" => Attr::RequestMethod,
            "request.path" => Attr::RequestPath,
            "request.url_path" => Attr::RequestUrlPath,
            "request.host" => Attr::RequestHost,
            "request.protocol" => Attr::RequestProtocol,
            "request.id" => Attr::RequestId,
            "request.useragent" => Attr::RequestUserAgent,
            "request.scheme" => Attr::RequestScheme,
            "source.principal" => Attr::SourcePrincipal,
            "connection.mtls" => Attr::ConnectionMtls,
            "upstream.cluster" | "xds.cluster_name" => Attr::UpstreamCluster,
            _ => return None,
        })
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = match self {
            Attr::ResponseCode => "response.code",
            Attr::ResponseGrpcStatus => "response.grpc_status",
            Attr::ResponseFlags => "response.flags",
            Attr::ResponseDuration => "response.duration",
            Attr::RequestMethod => "request.method",
            Attr::RequestPath => "request.path",
            Attr::RequestUrlPath => "request.url_path",
            Attr::RequestHost => "request.host",
            Attr::RequestProtocol => "request.protocol",
            Attr::RequestId => "request.id",
            Attr::RequestUserAgent => "request.useragent",
            Attr::RequestScheme => "request.scheme",
            Attr::RequestHeader(h) => return write!(f, "request.headers['{h}']"),
            Attr::ResponseHeader(h) => return write!(f, "response.headers['{h}']"),
            Attr::SourcePrincipal => "source.principal",
            Attr::ConnectionMtls => "connection.mtls",
            Attr::UpstreamCluster => "upstream.cluster",
        };
        f.write_str(path)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Str(String),
    Bool(bool),
    /// The attribute is not known for this request.
    Absent,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => f.write_str(s),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Absent => f.write_str("unknown"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Attr(Attr),
    Lit(Value),
    Cmp(Box<Expr>, Op, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl Expr {
    pub fn parse(text: &str) -> Result<Expr, ParseError> {
        let tokens = lex(text)?;
        let mut p = Parser { tokens, at: 0 };
        let e = p.or()?;
        match p.tokens.get(p.at) {
            None => Ok(e),
            Some(t) => Err(ParseError(format!("unexpected {t} in {text:?}"))),
        }
    }

    /// Evaluates with `attr` giving each attribute's value.
    pub fn eval(&self, attr: &dyn Fn(&Attr) -> Value) -> Value {
        match self {
            Expr::Attr(a) => attr(a),
            Expr::Lit(v) => v.clone(),
            Expr::Not(e) => match e.eval(attr) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Bool(false),
            },
            Expr::And(a, b) => Value::Bool(a.eval(attr).truthy() && b.eval(attr).truthy()),
            Expr::Or(a, b) => Value::Bool(a.eval(attr).truthy() || b.eval(attr).truthy()),
            Expr::Cmp(a, op, b) => {
                let (a, b) = (a.eval(attr), b.eval(attr));
                let ord = match (&a, &b) {
                    (Value::Int(x), Value::Int(y)) => x.partial_cmp(y),
                    (Value::Str(x), Value::Str(y)) => x.partial_cmp(y),
                    (Value::Bool(x), Value::Bool(y)) => x.partial_cmp(y),
                    // An unknown attribute compares to nothing (as CEL's
                    // missing attribute errors, and Envoy then logs nothing).
                    _ => None,
                };
                Value::Bool(ord.is_some_and(|o| match op {
                    Op::Eq => o.is_eq(),
                    Op::Ne => o.is_ne(),
                    Op::Lt => o.is_lt(),
                    Op::Le => o.is_le(),
                    Op::Gt => o.is_gt(),
                    Op::Ge => o.is_ge(),
                }))
            }
        }
    }

    /// Every attribute the expression reads.
    pub fn attributes(&self) -> Vec<&Attr> {
        match self {
            Expr::Attr(a) => vec![a],
            Expr::Lit(_) => Vec::new(),
            Expr::Not(e) => e.attributes(),
            Expr::Cmp(a, _, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                let mut v = a.attributes();
                v.extend(b.attributes());
                v
            }
        }
    }

    /// Evaluates as a filter: only a true boolean passes.
    pub fn matches(&self, attr: &dyn Fn(&Attr) -> Value) -> bool {
        self.eval(attr).truthy()
    }
}

impl Value {
    fn truthy(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Str(String),
    Op(Op),
    And,
    Or,
    Not,
    LParen,
    RParen,
    LBracket,
    RBracket,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "`{s}`"),
            Token::Int(n) => write!(f, "`{n}`"),
            Token::Str(s) => write!(f, "'{s}'"),
            Token::Op(op) => f.write_str(match op {
                Op::Eq => "`==`",
                Op::Ne => "`!=`",
                Op::Lt => "`<`",
                Op::Le => "`<=`",
                Op::Gt => "`>`",
                Op::Ge => "`>=`",
            }),
            Token::And => f.write_str("`&&`"),
            Token::Or => f.write_str("`||`"),
            Token::Not => f.write_str("`!`"),
            Token::LParen => f.write_str("`(`"),
            Token::RParen => f.write_str("`)`"),
            Token::LBracket => f.write_str("`[`"),
            Token::RBracket => f.write_str("`]`"),
        }
    }
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |m: &str| ParseError(format!("{m} in {text:?}"));
    while i < b.len() {
        let c = b[i];
        let two = b.get(i..i + 2);
        let (token, len) = match c {
            b' ' | b'\t' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => (Token::LParen, 1),
            b')' => (Token::RParen, 1),
            b'[' => (Token::LBracket, 1),
            b']' => (Token::RBracket, 1),
            _ if two == Some(b"&&") => (Token::And, 2),
            _ if two == Some(b"||") => (Token::Or, 2),
            _ if two == Some(b"==") => (Token::Op(Op::Eq), 2),
            _ if two == Some(b"!=") => (Token::Op(Op::Ne), 2),
            _ if two == Some(b"<=") => (Token::Op(Op::Le), 2),
            _ if two == Some(b">=") => (Token::Op(Op::Ge), 2),
            b'<' => (Token::Op(Op::Lt), 1),
            b'>' => (Token::Op(Op::Gt), 1),
            b'!' => (Token::Not, 1),
            b'\'' | b'"' => {
                let end = b[i + 1..]
                    .iter()
                    .position(|x| *x == c)
                    .ok_or_else(|| err("unterminated string"))?;
                (Token::Str(text[i + 1..i + 1 + end].to_string()), end + 2)
            }
            b'0'..=b'9' => {
                let end = b[i..]
                    .iter()
                    .position(|x| !x.is_ascii_digit())
                    .unwrap_or(b.len() - i);
                let n = text[i..i + end]
                    .parse()
                    .map_err(|_| err("number too large"))?;
                (Token::Int(n), end)
            }
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                let end = b[i..]
                    .iter()
                    .position(|x| !(x.is_ascii_alphanumeric() || *x == b'_' || *x == b'.'))
                    .unwrap_or(b.len() - i);
                (Token::Ident(text[i..i + end].to_string()), end)
            }
            _ => return Err(err(&format!("unexpected character {:?}", char::from(c)))),
        };
        out.push(token);
        i += len;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.cmp()?;
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.cmp()?));
        }
        Ok(e)
    }

    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let left = self.unary()?;
        if let Some(Token::Op(op)) = self.peek().cloned() {
            self.at += 1;
            let right = self.unary()?;
            return Ok(Expr::Cmp(Box::new(left), op, Box::new(right)));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        match self.next() {
            Some(Token::Not) => Ok(Expr::Not(Box::new(self.unary()?))),
            Some(Token::LParen) => {
                let e = self.or()?;
                match self.next() {
                    Some(Token::RParen) => Ok(e),
                    _ => Err(ParseError("missing )".into())),
                }
            }
            Some(Token::Int(n)) => Ok(Expr::Lit(Value::Int(n))),
            Some(Token::Str(s)) => Ok(Expr::Lit(Value::Str(s))),
            Some(Token::Ident(id)) if id == "true" || id == "false" => {
                Ok(Expr::Lit(Value::Bool(id == "true")))
            }
            Some(Token::Ident(id)) if id == "request.headers" || id == "response.headers" => {
                let name = match (self.next(), self.next(), self.next()) {
                    (Some(Token::LBracket), Some(Token::Str(s)), Some(Token::RBracket)) => s,
                    _ => return Err(ParseError(format!("{id} needs ['name']"))),
                };
                let name = name.to_ascii_lowercase();
                Ok(Expr::Attr(if id == "request.headers" {
                    Attr::RequestHeader(name)
                } else {
                    Attr::ResponseHeader(name)
                }))
            }
            Some(Token::Ident(id)) => Attr::from_path(&id)
                .map(Expr::Attr)
                .ok_or_else(|| ParseError(format!("unknown attribute {id:?}"))),
            Some(t) => Err(ParseError(format!("unexpected {t}"))),
            None => Err(ParseError("expression ends too early".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, code: i64, method: &str) -> bool {
        let e = Expr::parse(text).expect("parses");
        e.matches(&|a| match a {
            Attr::ResponseCode => Value::Int(code),
            Attr::RequestMethod => Value::Str(method.into()),
            Attr::RequestHeader(h) if h == "x-debug" => Value::Str("1".into()),
            _ => Value::Absent,
        })
    }

    #[test]
    fn common_filters() {
        assert!(eval("response.code >= 400", 503, "GET"));
        assert!(!eval("response.code >= 400", 200, "GET"));
        assert!(eval(
            "response.code >= 500 || request.method == 'POST'",
            200,
            "POST"
        ));
        assert!(!eval(
            "!(response.code < 400) && request.method == \"GET\"",
            200,
            "GET"
        ));
        assert!(eval("request.headers['X-Debug'] == '1'", 200, "GET"));
        assert!(
            !eval("source.principal == 'x'", 200, "GET"),
            "absent is false"
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        for bad in [
            "response.code >=",
            "response.cod >= 400",
            "(response.code >= 400",
            "response.code >= 400 extra",
            "request.headers[x]",
            "'open",
            "response.code # 1",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad}");
        }
        let e = Expr::parse("response.cod >= 400").expect_err("unknown");
        assert!(e.0.contains("response.cod"), "{e}");
    }
}
