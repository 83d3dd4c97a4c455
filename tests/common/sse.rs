//! A blocking Server-Sent Events client over one socket, for the streaming tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// One SSE event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

impl Event {
    pub fn channel(&self) -> &str {
        self.data["channel"].as_str().unwrap_or_default()
    }
    pub fn seq(&self) -> u64 {
        self.data["seq"].as_u64().expect("seq")
    }
}

/// A blocking SSE client over one socket (HTTP/1.1, chunked body).
pub struct Sse {
    reader: BufReader<TcpStream>,
    chunk_left: usize,
    body: Vec<u8>,
    ended: bool,
}

impl Sse {
    pub fn open(addr: SocketAddr, request: &str) -> (u16, Self) {
        let mut stream = TcpStream::connect(addr).expect("connect");
        // The API answers once the warm-up is done, which takes a while on a loaded machine.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("write");
        let mut reader = BufReader::new(stream);
        let mut status = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("head");
            if status == 0 {
                status = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .expect("status");
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let sse = Self {
            reader,
            chunk_left: 0,
            body: Vec::new(),
            ended: false,
        };
        (status, sse)
    }

    pub fn get(addr: SocketAddr, path: &str, last_id: Option<&str>) -> Self {
        let last = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let (status, sse) = Self::open(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{last}\r\n"),
        );
        assert_eq!(status, 200, "GET {path}");
        sse
    }

    /// Reads more of the chunked body; false at its end.
    fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        if self.chunk_left == 0 {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                self.ended = true;
                return false;
            }
            if line.trim().is_empty() {
                return true; // the CRLF after a chunk
            }
            self.chunk_left = usize::from_str_radix(line.trim(), 16).expect("chunk size");
            if self.chunk_left == 0 {
                self.ended = true;
                return false;
            }
        }
        let mut buf = vec![0; self.chunk_left.min(64 * 1024)];
        match self.reader.read(&mut buf) {
            Ok(0) | Err(_) => {
                self.ended = true;
                false
            }
            Ok(n) => {
                self.chunk_left -= n;
                self.body.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// The next event (comments skipped), or `None` when the stream ended.
    pub fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.body.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.body.drain(..end + 2).collect();
                let text = String::from_utf8(raw).expect("utf-8");
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if event.is_empty() {
                    continue; // a comment (heartbeat, open)
                }
                let data = serde_json::from_str(&data).expect("JSON data");
                return Some(Event { id, event, data });
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Events until `done` says enough (or the stream ends).
    pub fn until(&mut self, mut done: impl FnMut(&[Event]) -> bool) -> Vec<Event> {
        let mut got = Vec::new();
        while !done(&got) {
            match self.next() {
                Some(e) => got.push(e),
                None => break,
            }
        }
        got
    }
}

/// Seqs per channel.
pub fn by_channel(events: &[Event]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.event != "replay_gap") {
        out.entry(e.channel().to_string())
            .or_default()
            .push(e.seq());
    }
    out
}

pub fn consecutive(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[1] == w[0] + 1)
}

pub fn count(events: &[Event], channel: &str, event: &str) -> usize {
    events
        .iter()
        .filter(|e| e.channel() == channel && e.event == event)
        .count()
}
