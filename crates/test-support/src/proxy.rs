//! A TCP proxy with a switch, for fault tests: put it between a service and
//! Redis, RabbitMQ or Postgres, then take the backend "down" (every
//! connection cut, new ones closed at once), make it "hang" (connections
//! stay open but nothing gets through) or "delay" every chunk of bytes, and
//! bring it back.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::FutureExt;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Up,
    /// Cut every connection and close new ones immediately.
    Down,
    /// Keep connections open but forward nothing: a backend that hangs.
    Hang,
    /// Forward, holding each chunk the backend sends back this long first:
    /// a backend slow to answer (requests reach it at once). A chunk already
    /// held when the mode changes still waits its delay.
    Delay(Duration),
}

/// A running proxy. Dropping it stops it.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
    /// Sockets held open in `Hang` mode.
    parked: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections currently forwarding bytes.
    forwarding: Arc<AtomicUsize>,
}

impl Proxy {
    /// Proxies a fresh local port to `target` (host:port).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (mode, watcher) = watch::channel(Mode::Up);
        let parked = Arc::new(Mutex::new(Vec::new()));
        let forwarding = Arc::new(AtomicUsize::new(0));
        let target = target.to_owned();
        let (park, active) = (Arc::clone(&parked), Arc::clone(&forwarding));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let current = *watcher.borrow();
                match current {
                    Mode::Down => drop(client),
                    Mode::Hang => park.lock().expect("park").push(client),
                    Mode::Up | Mode::Delay(_) => {
                        active.fetch_add(1, Ordering::AcqRel);
                        let (target, watcher, park, active) = (
                            target.clone(),
                            watcher.clone(),
                            Arc::clone(&park),
                            Arc::clone(&active),
                        );
                        tokio::spawn(async move {
                            forward(client, target, watcher, park).await;
                            active.fetch_sub(1, Ordering::AcqRel);
                        });
                    }
                }
            }
        });
        Self {
            addr,
            mode,
            task,
            parked,
            forwarding,
        }
    }

    /// A proxy in front of the server `url` names, and the same URL
    /// pointing at the proxy.
    pub async fn for_url(url: &str) -> (Self, String) {
        let parsed = reqwest::Url::parse(url).expect("valid URL");
        let host = parsed.host_str().expect("a URL with a host");
        let port = parsed
            .port_or_known_default()
            .unwrap_or(match parsed.scheme() {
                "postgres" | "postgresql" => 5432,
                "redis" => 6379,
                "amqp" => 5672,
                other => panic!("no default port for {other}"),
            });
        let proxy = Self::start(&format!("{host}:{port}")).await;
        let proxied = proxy.url_for(url);
        (proxy, proxied)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let mut u = reqwest::Url::parse(url).expect("valid URL");
        let _ = u.set_host(Some("127.0.0.1"));
        let _ = u.set_port(Some(self.port()));
        u.to_string()
    }

    /// Switches the mode. When it returns, the switch has taken effect: no
    /// connection forwards bytes any more unless the mode is `Up`.
    pub async fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
        if mode != Mode::Hang {
            self.parked.lock().expect("park").clear();
        }
        if matches!(mode, Mode::Down | Mode::Hang) {
            for _ in 0..2000 {
                if self.forwarding.load(Ordering::Acquire) == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("proxy connections did not stop forwarding");
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Down);
        self.task.abort();
    }
}

async fn forward(
    mut client: TcpStream,
    target: String,
    mut mode: watch::Receiver<Mode>,
    parked: Arc<Mutex<Vec<TcpStream>>>,
) {
    let Ok(mut server) = TcpStream::connect(&target).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let answers = mode.clone();
    let copy = async {
        tokio::select! {
            r = tokio::io::copy(&mut cr, &mut sw).map(|r| r.map(drop)) => r,
            r = pump(&mut sr, &mut cw, answers) => r,
        }
    };
    let switched = async {
        loop {
            if mode.changed().await.is_err() {
                return Mode::Down;
            }
            let m = *mode.borrow();
            if matches!(m, Mode::Down | Mode::Hang) {
                return m;
            }
        }
    };
    tokio::select! {
        _ = copy => {}
        m = switched => {
            if m == Mode::Hang {
                // Keep the client's socket open, reading nothing back.
                parked.lock().expect("park").push(client);
            }
        }
    }
}

/// Copies the backend's answers chunk by chunk, holding each chunk while
/// the mode says `Delay`.
async fn pump(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    mode: watch::Receiver<Mode>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let delay = match *mode.borrow() {
            Mode::Delay(d) => Some(d),
            _ => None,
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
