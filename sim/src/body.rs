//! Reply bodies written by hand from the compact book: `/v1/orders` and `/v1/order/cancel/all`.
//!
//! A body that fits in one chunk is sent whole (with a `Content-Length`); a bigger one is
//! streamed, one chunk formatted each time hyper asks for more, so a listing of millions of
//! orders never sits in memory and a slow reader slows the formatting down instead of piling
//! it up.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Bodies are formatted and sent in pieces of about this size.
pub(crate) const CHUNK: usize = 64 * 1024;

/// A JSON document produced a piece at a time.
pub(crate) trait JsonChunks {
    /// Appends at least [`CHUNK`] bytes to `buf`, or the rest of the document; returns true
    /// once the document is complete.
    fn fill(&mut self, buf: &mut Vec<u8>) -> bool;
}

/// A `200 application/json` response: whole when small, streamed when not.
pub(crate) fn json_response(mut doc: impl JsonChunks + Send + 'static) -> Response {
    let content_type = [(header::CONTENT_TYPE, "application/json")];
    // Most replies are small: start small rather than reserve a whole chunk per request.
    let mut first = Vec::with_capacity(512);
    if doc.fill(&mut first) {
        return (content_type, first).into_response();
    }
    let mut pending = Some(first);
    let mut finished = false;
    let chunks = std::iter::from_fn(move || {
        if let Some(buf) = pending.take() {
            return Some(Ok::<_, Infallible>(Bytes::from(buf)));
        }
        if finished {
            return None;
        }
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        finished = doc.fill(&mut buf);
        Some(Ok(Bytes::from(buf)))
    });
    (
        content_type,
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}

/// The whole document at once (tests, and callers that want bytes).
#[cfg(test)]
pub(crate) fn to_vec(mut doc: impl JsonChunks) -> Vec<u8> {
    let mut out = Vec::new();
    while !doc.fill(&mut out) {}
    out
}

/// One element of a streamed array, written as JSON by its owner (the book's orders know
/// their own layout; this file knows only how to stream them).
pub(crate) trait JsonItem {
    fn write_json(&self, buf: &mut Vec<u8>);
}

/// `/v1/orders`: a JSON array of the orders, in id order.
pub(crate) struct OrderList<T> {
    orders: Arc<Vec<T>>,
    next: usize,
}

impl<T> OrderList<T> {
    pub(crate) fn new(orders: Arc<Vec<T>>) -> Self {
        OrderList { orders, next: 0 }
    }
}

impl<T: JsonItem> JsonChunks for OrderList<T> {
    fn fill(&mut self, buf: &mut Vec<u8>) -> bool {
        let end = buf.len() + CHUNK;
        if self.next == 0 {
            buf.push(b'[');
        }
        while self.next < self.orders.len() {
            if buf.len() >= end {
                return false;
            }
            if self.next > 0 {
                buf.push(b',');
            }
            self.orders[self.next].write_json(buf);
            self.next += 1;
        }
        buf.push(b']');
        true
    }
}

/// `/v1/order/cancel/all`'s reply: the two id lists as bare integers.
pub(crate) struct CancelReply {
    cancelled: Arc<Vec<u64>>,
    rejects: Arc<Vec<u64>>,
    stage: u8,
    next: usize,
}

impl CancelReply {
    pub(crate) fn new(cancelled: Arc<Vec<u64>>, rejects: Arc<Vec<u64>>) -> Self {
        CancelReply {
            cancelled,
            rejects,
            stage: 0,
            next: 0,
        }
    }
}

impl JsonChunks for CancelReply {
    fn fill(&mut self, buf: &mut Vec<u8>) -> bool {
        let end = buf.len() + CHUNK;
        loop {
            match self.stage {
                0 => buf.extend_from_slice(br#"{"result":"ok","details":{"cancelledOrders":["#),
                1 | 3 => {
                    let ids = if self.stage == 1 {
                        &self.cancelled
                    } else {
                        &self.rejects
                    };
                    while self.next < ids.len() {
                        if buf.len() >= end {
                            return false;
                        }
                        if self.next > 0 {
                            buf.push(b',');
                        }
                        push_u64(buf, ids[self.next]);
                        self.next += 1;
                    }
                    self.next = 0;
                }
                2 => buf.extend_from_slice(br#"],"cancelRejects":["#),
                _ => {
                    buf.extend_from_slice(b"]}}");
                    return true;
                }
            }
            self.stage += 1;
        }
    }
}

/// Decimal digits of `n`.
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// `units` scaled down by 10^decimals, with exactly `decimals` digits after the point.
pub(crate) fn push_fixed(buf: &mut Vec<u8>, units: u64, decimals: u32) {
    let scale = 10u64.pow(decimals);
    push_u64(buf, units / scale);
    if decimals > 0 {
        buf.push(b'.');
        let frac = units % scale;
        let mut digits = [b'0'; 20];
        let mut rest = frac;
        for d in digits[..decimals as usize].iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        buf.extend_from_slice(&digits[..decimals as usize]);
    }
}

/// Millionths as the shortest exact decimal: 1500000 is `1.5`, 0 is `0`.
pub(crate) fn push_micros(buf: &mut Vec<u8>, units: u64) {
    push_u64(buf, units / 1_000_000);
    let mut frac = units % 1_000_000;
    if frac == 0 {
        return;
    }
    let mut width = 6;
    while frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    buf.push(b'.');
    let mut digits = [b'0'; 6];
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    buf.extend_from_slice(&digits[..width]);
}

/// Eight lower-case hex digits.
pub(crate) fn push_hex8(buf: &mut Vec<u8>, v: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..8).rev() {
        buf.push(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut buf = Vec::new();
        f(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn numbers_format_like_format() {
        for n in [0, 7, 10, 999, 7_000_000_012, u64::MAX] {
            assert_eq!(text(|b| push_u64(b, n)), n.to_string());
        }
        assert_eq!(text(|b| push_fixed(b, 6_123_456, 2)), "61234.56");
        assert_eq!(text(|b| push_fixed(b, 7_500, 5)), "0.07500");
        assert_eq!(text(|b| push_fixed(b, 150_000, 3)), "150.000");
        assert_eq!(text(|b| push_fixed(b, 5, 0)), "5");
        for (units, want) in [
            (0, "0"),
            (1_000, "0.001"),
            (1_500_000, "1.5"),
            (5_000_000, "5"),
            (4_999_999, "4.999999"),
            (120_000, "0.12"),
        ] {
            assert_eq!(text(|b| push_micros(b, units)), want);
        }
        assert_eq!(text(|b| push_hex8(b, 0x0a1b_2c3d)), "0a1b2c3d");
    }

    #[test]
    fn cancel_reply_is_json_at_any_size() {
        for (c, r) in [(0, 0), (3, 0), (0, 2), (20_000, 7)] {
            let cancelled: Vec<u64> = (0..c).map(|i| 7_000_000_000 + i).collect();
            let rejects: Vec<u64> = (0..r).map(|i| 9_000_000_000 + i).collect();
            let doc = CancelReply::new(Arc::new(cancelled.clone()), Arc::new(rejects.clone()));
            let v: serde_json::Value = serde_json::from_slice(&to_vec(doc)).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"result": "ok", "details": {
                    "cancelledOrders": cancelled, "cancelRejects": rejects}})
            );
        }
    }
}
