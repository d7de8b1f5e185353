//! Request and reply types shared by every simulated endpoint, and Graph's error body.

use bytes::Bytes;
use hyper::HeaderMap;
use serde_json::{Value, json};

/// An incoming request, fully read.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: hyper::Method,
    /// Percent-decoded path.
    pub path: String,
    /// Decoded query pairs in order.
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A reply before it is turned into HTTP (or into a `$batch` item).
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

#[derive(Clone, Debug)]
pub enum Body {
    Empty,
    Json(Value),
    Raw(Bytes, &'static str),
}

/// Graph's JSON content type.
pub const GRAPH_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

impl Reply {
    pub fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Json(v),
        }
    }
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }
    pub fn raw(status: u16, bytes: impl Into<Bytes>, ctype: &'static str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Raw(bytes.into(), ctype),
        }
    }
    pub fn with_header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

/// Per-request identifiers Graph echoes in `innerError` and headers.
#[derive(Clone, Debug)]
pub struct RequestIds {
    pub request_id: String,
    pub client_request_id: String,
    pub date: String,
}

/// Graph's error body: `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
pub fn graph_error(status: u16, code: &str, message: &str, ids: &RequestIds) -> Reply {
    Reply::json(
        status,
        json!({"error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": ids.date,
                "request-id": ids.request_id,
                "client-request-id": ids.client_request_id,
            }
        }}),
    )
}
