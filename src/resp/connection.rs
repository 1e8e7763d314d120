//! One RESP socket and its two buffers. Input is read into a `BytesMut` and framed
//! in place (bulk strings share its memory); replies and deliveries are appended
//! to the output buffer and written with one `write` per batch, so a pipelined
//! burst of commands costs one read and one write.
//!
//! This type only moves bytes: it never interprets a command.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{self, Checked, Frame, FrameLimits};

/// Initial and minimum free space of the input buffer.
const READ_CHUNK: usize = 16 * 1024;

/// Output capacity kept between writes.
const MAX_IDLE_OUTPUT: usize = 1024 * 1024;

/// A client socket with its buffers.
pub struct Connection {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
}

impl Connection {
    /// Wraps an accepted socket (Nagle off: replies are already batched).
    pub fn new(stream: TcpStream) -> Connection {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// The next whole frame already buffered, if any.
    pub fn next_frame(&mut self, limits: &FrameLimits) -> Result<Option<Frame>, frame::Error> {
        match frame::check(&self.input, limits)? {
            Checked::Incomplete => Ok(None),
            Checked::Complete(len) => {
                let bytes = self.input.split_to(len).freeze();
                frame::parse(&bytes).map(Some)
            }
        }
    }

    /// Bytes read but not yet framed.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// Reads what the socket has; `Ok(0)` at end of stream. Cancel-safe.
    pub async fn read(&mut self) -> std::io::Result<usize> {
        if self.input.capacity() - self.input.len() < READ_CHUNK / 4 {
            self.input.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.input).await
    }

    /// Where replies are written before [`Connection::flush`].
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }

    /// Writes what the socket takes without waiting; `Ok(true)` when nothing is
    /// left pending. The common case (a reply that fits the socket buffer) then
    /// costs one `write` and no wakeup registration.
    pub fn try_flush(&mut self) -> std::io::Result<bool> {
        while !self.output.is_empty() {
            match self.stream.try_write(&self.output) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                // All of it: keep the buffer's capacity for the next replies.
                Ok(n) if n == self.output.len() => self.output.clear(),
                Ok(n) => {
                    let _ = self.output.split_to(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if self.output.capacity() > MAX_IDLE_OUTPUT {
            self.output = BytesMut::with_capacity(READ_CHUNK);
        }
        Ok(true)
    }

    /// Writes every pending reply.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            if self.output.capacity() > MAX_IDLE_OUTPUT {
                // One huge reply must not pin its memory for the connection's life.
                self.output = BytesMut::with_capacity(READ_CHUNK);
            } else {
                self.output.clear();
            }
        }
        Ok(())
    }
}
