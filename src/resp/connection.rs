//! One RESP socket and its two buffers. Input is read into a `BytesMut` and
//! decoded in place by the connection's [`Decoder`] (bulk strings share its
//! memory); replies and deliveries are appended to the output buffer and written
//! with one `write` per batch, so a pipelined burst of commands costs one read
//! and one write.
//!
//! This type only moves bytes: it never interprets a command.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use bytes::Bytes;

use super::frame::{self, Decoder, RequestLimits};

/// Initial and minimum free space of the input buffer.
const READ_CHUNK: usize = 16 * 1024;

/// Most input space reserved ahead of what was received.
const MAX_RESERVE: usize = 1024 * 1024;

/// Output capacity kept between writes.
const MAX_IDLE_OUTPUT: usize = 1024 * 1024;

/// A client socket with its buffers.
pub struct Connection {
    stream: TcpStream,
    input: BytesMut,
    decoder: Decoder,
    output: BytesMut,
}

impl Connection {
    /// Wraps an accepted socket (Nagle off: replies are already batched).
    pub fn new(stream: TcpStream) -> Connection {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            decoder: Decoder::new(),
            output: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// The arguments of the next whole request already received, if any (an
    /// empty list for a request to ignore).
    pub fn next_request(
        &mut self,
        limits: &RequestLimits,
    ) -> Result<Option<Vec<Bytes>>, frame::Error> {
        self.decoder.decode(&mut self.input, limits)
    }

    /// Reads what the socket has; `Ok(0)` at end of stream. Cancel-safe.
    pub async fn read(&mut self) -> std::io::Result<usize> {
        let free = self.input.capacity() - self.input.len();
        // A large bulk string still arriving gets room for up to a megabyte more
        // at once (fewer copies than growing by chunks), but never what a peer
        // merely announced: memory follows the bytes actually received.
        let wanted = self
            .decoder
            .pending_bulk(self.input.len())
            .clamp(READ_CHUNK / 4, MAX_RESERVE);
        if free < wanted {
            self.input.reserve(wanted.max(READ_CHUNK));
        }
        self.stream.read_buf(&mut self.input).await
    }

    /// Bytes of replies waiting to be written.
    pub fn pending_output(&self) -> usize {
        self.output.len()
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
