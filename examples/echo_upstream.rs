//! A tiny stand-in authorization server for demos and load tests: answers every HTTP/1.1 request
//! with a fixed token JSON and, unless `--quiet`, prints the request it received (so you can see
//! what tokengate forwarded). Binds 127.0.0.1 only.
//!
//! cargo run --example echo_upstream -- [PORT] [--quiet]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
Cache-Control: no-store\r\nContent-Length: 65\r\n\r\n\
{\"access_token\":\"at-123\",\"token_type\":\"Bearer\",\"expires_in\":3600}";

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quiet = args.iter().any(|a| a == "--quiet");
    let port: u16 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(9000);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("echo_upstream listening on 127.0.0.1:{port}");
    loop {
        let (conn, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(conn, quiet).await;
        });
    }
}

async fn serve(conn: TcpStream, quiet: bool) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        let mut head = String::new();
        let mut content_length = 0usize;
        loop {
            line.clear();
            let n = tokio::time::timeout(Duration::from_secs(60), r.read_line(&mut line))
                .await
                .map_err(|_| std::io::ErrorKind::TimedOut)??;
            if n == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
            head.push_str(&line);
        }
        let mut body = vec![0; content_length];
        r.read_exact(&mut body).await?;
        if !quiet {
            println!("{head}\n{}\n", String::from_utf8_lossy(&body));
        }
        w.write_all(RESPONSE).await?;
    }
}
