//! hyper answers a request it cannot parse (400) or whose head is too large
//! (431) by itself, without calling pixeld's service, so those answers lack
//! the `Cache-Control: no-store` every other answer carries. This wrapper
//! around the connection adds it to an error head hyper writes without one.
//! The request path pays a comparison of the first bytes of each write.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const HEADER: &[u8] = b"cache-control: no-store\r\n";

/// The connection, adding `Cache-Control: no-store` to hyper's own error answers.
pub struct NoStore<S> {
    inner: S,
    /// A rewritten head still to be written (hyper was told it was taken).
    pending: Vec<u8>,
    /// How much of `pending` is written.
    sent: usize,
}

impl<S> NoStore<S> {
    pub fn new(inner: S) -> Self {
        NoStore {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

/// `buf` with the header added after its status line, if it is an error
/// head without a `Cache-Control` of its own.
fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    if !(buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.1 5")) {
        return None;
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..head_end];
    if head
        .windows(14)
        .any(|w| w.eq_ignore_ascii_case(b"cache-control:"))
    {
        return None;
    }
    let line_end = head.windows(2).position(|w| w == b"\r\n")? + 2;
    let mut out = Vec::with_capacity(buf.len() + HEADER.len());
    out.extend_from_slice(&buf[..line_end]);
    out.extend_from_slice(HEADER);
    out.extend_from_slice(&buf[line_end..]);
    Some(out)
}

impl<S: AsyncWrite + Unpin> NoStore<S> {
    /// Takes a rewritten head in place of `taken` bytes of hyper's: they are
    /// reported written now and go out with this or the next write or flush.
    fn hold(
        &mut self,
        cx: &mut Context<'_>,
        out: Vec<u8>,
        taken: usize,
    ) -> Poll<io::Result<usize>> {
        self.pending = out;
        self.sent = 0;
        if let Poll::Ready(Err(e)) = self.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    /// Writes what is pending; ready once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoStore<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoStore<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(out) = rewrite(buf) {
            return self.hold(cx, out, buf.len());
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    /// Vectored writes pass through (hyper writes a response's head and body
    /// as separate slices); only an error head without `Cache-Control`,
    /// always whole in the first slice, is rewritten, with the rest after it.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if let Some(mut out) = rewrite(first) {
                let mut taken = first.len();
                for b in bufs.iter().skip_while(|b| b.is_empty()).skip(1) {
                    out.extend_from_slice(b);
                    taken += b.len();
                }
                return self.hold(cx, out, taken);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn adds_the_header_to_error_heads_without_one() {
        let out = rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 400 Bad Request\r\ncache-control: no-store\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(rewrite(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(
            rewrite(b"HTTP/1.1 431 X\r\nCache-Control: no-store\r\n\r\n"),
            None
        );
    }
}
