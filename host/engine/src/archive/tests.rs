use super::*;

#[tokio::test]
async fn an_idle_connection_is_closed_even_when_its_host_is_never_called_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    // A callback endpoint on loopback that keeps its connections open, counting those the
    // client closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (opened, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (o, c) = (opened.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            o.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                // Each request is a head and a body of `content-length` bytes.
                let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
                while let Ok(n) = tcp.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        if buf.len() < end + 4 + length {
                            break;
                        }
                        buf.drain(..end + 4 + length);
                        tcp.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let dir = std::env::temp_dir().join(format!("tg_archive_pool_{}", std::process::id()));
    let settings = Settings {
        dir: dir.clone(),
        remote: None,
        max_bytes: 1 << 20,
        deadline: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        rules: guard::Rules { allow_hosts: vec![], private_hosts: vec!["127.0.0.1".into()] },
        webhook_hosts: vec!["127.0.0.1".into()],
        speech_dir: dir.join("speech"),
        trust: crate::exchange::Trust::web_pki(),
    };
    let archive = Archive::open(settings, crate::store::open_for_test("archive_pool").await).unwrap();
    for _ in 0..2 {
        assert_eq!(archive.post(&url, Bytes::from_static(b"{}"), &[]).await, Ok(204));
    }
    assert_eq!(opened.load(Ordering::SeqCst), 1, "the second callback reused the connection");
    // Never called again: closed by the client once idle for POOL_IDLE.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(closed.load(Ordering::SeqCst), 0, "kept while idle less than POOL_IDLE");
    for _ in 0..500 {
        if closed.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(closed.load(Ordering::SeqCst), 1, "closed once idle for POOL_IDLE");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn only_media_are_kept_as_what_the_host_or_the_plugin_says() {
    assert_eq!(media_type(Some("video/mp4"), Some("video/mp4")).unwrap(), "video/mp4");
    assert_eq!(media_type(Some("Video/MP4; codecs=avc1"), None).unwrap(), "video/mp4");
    assert_eq!(media_type(Some("application/octet-stream"), Some("audio/mpeg")).unwrap(), "audio/mpeg");
    assert_eq!(media_type(None, None).unwrap(), "application/octet-stream");
    assert_eq!(media_type(Some("video/webm"), Some("video/mp4")).unwrap(), "video/webm");
    assert!(media_type(Some("text/html; charset=utf-8"), Some("video/mp4")).unwrap_err().contains("text/html"));
    assert!(media_type(Some("application/json"), None).is_err(), "an answer, not a file");
    assert_eq!(media_type(Some("application/octet-stream"), Some("application/jsonl")).unwrap(), "application/jsonl");
    assert_eq!(media_type(Some("application/x-ndjson"), None).unwrap(), "application/x-ndjson", "results");
    assert!(media_type(Some("image/png"), Some("video/mp4")).unwrap_err().contains("announced"));
    assert!(media_type(Some("video/"), None).is_err());
    assert!(media_type(Some("image/svg+xml"), None).is_err(), "scripts");
    assert!(media_type(Some("video/mp4\r\nx: y"), None).is_err());
    assert_eq!(media_type(None, Some("video/mp4\n")).unwrap(), "video/mp4", "trimmed");
    assert_eq!(media_type(None, Some("video/m p4")).unwrap(), "application/octet-stream");
}

#[test]
fn redirects_go_to_absolute_urls_or_paths_of_the_same_origin() {
    let from: http::Uri = "https://cdn.example.com/a?x=1".parse().unwrap();
    assert_eq!(redirect(&from, Some("https://b.example.com/v")).unwrap(), "https://b.example.com/v");
    assert_eq!(redirect(&from, Some("HTTPS://b.example.com/v")).unwrap(), "HTTPS://b.example.com/v");
    assert_eq!(redirect(&from, Some("/signed/v.mp4")).unwrap(), "https://cdn.example.com/signed/v.mp4");
    assert!(redirect(&from, Some("//evil.com/x")).is_err());
    assert!(redirect(&from, Some("v.mp4")).is_err());
    assert!(redirect(&from, None).is_err());
}
