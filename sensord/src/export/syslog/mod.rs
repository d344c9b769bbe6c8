//! The syslog exporter: RFC 5424 messages (the JSON contract, its ECS form or CEF) over TCP,
//! or TLS (RFC 5425), octet-counted, to rsyslog, syslog-ng or a SIEM's collector.
//!
//! Like the JSON-lines exporter it follows the journal on a thread of its own, never the
//! capture loop, so a slow or absent receiver never blocks capture: the journal is its queue,
//! bounded on disk by the journal's own retention, and what it holds in memory is one page of
//! events. Its cursor, the last event handed over, is saved once the connection has stayed
//! up for [`SETTLE`] after the write; a lost connection or a restart resends from the cursor,
//! so nothing is lost when the receiver restarts (delivery is at least once: TCP syslog has no
//! acknowledgement, and events written in the last moments before a connection broke may
//! arrive twice). After an outage, events older than `max_age_secs` are counted, not sent.
//!
//! A receiver closes its end when it stops; the exporter watches for that (a syslog receiver
//! never sends anything) and reconnects with a backoff from 0.5 s to 30 s.

pub mod message;

use std::{
    os::fd::RawFd,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use sensor_host::config::{SyslogConfig, SyslogFormat};
use tokio::{
    io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    sync::{broadcast, watch},
};

use super::{
    connect::{Connection, Dialer, TlsFiles},
    cursor::CursorFile,
    ecs::chain::Chains,
    worker::{self, Worker},
};
use crate::{
    journal::{StoredEvent, follow::Follower},
    status::SyslogStats,
};
use message::{Sender, frame};

/// How long after a write the cursor may move past it (once the receiver's TCP acknowledged
/// every byte).
pub const SETTLE: Duration = Duration::from_millis(250);

/// How often a cursor waiting for acknowledgements looks again.
const RECHECK: Duration = Duration::from_millis(50);

/// How long a write may wait for a receiver that takes nothing before the connection is given
/// up (and the events resent on a new one).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes written on a TCP socket that its peer has not acknowledged yet (SIOCOUTQ).
fn unacknowledged(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is the open TCP socket of the connection this session owns; TIOCOUTQ
    // writes one c_int.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    (r == 0).then(|| usize::try_from(n).unwrap_or(0))
}

/// The TLS settings of a syslog configuration, when it asks for TLS.
fn tls_files(cfg: &SyslogConfig) -> Option<TlsFiles> {
    cfg.tls.then(|| TlsFiles {
        ca: cfg.ca.clone(),
        server_name: cfg
            .server_name
            .clone()
            .unwrap_or_else(|| cfg.host().to_owned()),
        client_cert: cfg.client_cert.clone(),
        client_key: cfg.client_key.clone(),
    })
}

fn dialer(cfg: &SyslogConfig) -> anyhow::Result<Dialer> {
    Dialer::new(cfg.address.clone(), tls_files(cfg).as_ref()).context("export.syslog")
}

/// Check what a start would load for the syslog export (its TLS files): the error names the
/// file.
pub fn check(cfg: &SyslogConfig) -> anyhow::Result<()> {
    dialer(cfg).map(drop)
}

/// A running syslog exporter: its thread, and how to stop it.
pub struct Exporter {
    worker: Worker,
}

/// Where the exporter reads from and keeps its place.
pub struct Source {
    pub journal: PathBuf,
    /// New events as they are committed: each session subscribes anew. Weak, so that the
    /// exporter neither keeps the channel open at shutdown nor holds unread events.
    pub live: broadcast::WeakSender<Arc<StoredEvent>>,
    pub cursor: CursorFile,
    /// The journal's last sequence number now; where a session starts when the cursor
    /// cannot be read.
    pub last_seq: u64,
}

impl Exporter {
    /// Start sending what the journal holds after the saved cursor (a new exporter: what is
    /// committed from now on). Fails at once on a bad TLS configuration; an unreachable
    /// receiver is retried.
    pub fn spawn(cfg: SyslogConfig, src: Source, stats: Arc<SyslogStats>) -> anyhow::Result<Self> {
        let dialer = dialer(&cfg)?;
        let mut src = src;
        src.last_seq = worker::start(&src.cursor, src.last_seq, "syslog")?;
        let sender = Sender {
            facility: cfg.facility,
            format: cfg.format,
            procid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
        };
        let worker = Worker::spawn(
            "export-syslog",
            worker::runtime("syslog")?,
            move |stopped| {
                let chains =
                    (cfg.format == SyslogFormat::Ecs).then(|| Chains::new(src.journal.clone()));
                Run {
                    cfg,
                    dialer,
                    sender,
                    chains,
                    src,
                    stats,
                    stopped,
                }
                .run()
            },
        )?;
        Ok(Self { worker })
    }

    /// Stop after a last flush.
    pub fn stop(self) {
        self.worker.stop();
    }

    /// sensord stops: as [`Exporter::stop`]. Events committed but not sent yet are sent
    /// after the next start (the cursor is behind them); waiting for them could wait forever
    /// on an absent receiver.
    pub fn join(self) {
        self.stop();
    }
}

struct Run {
    cfg: SyslogConfig,
    dialer: Dialer,
    sender: Sender,
    /// The ECS payload's certificate chains.
    chains: Option<Chains>,
    src: Source,
    stats: Arc<SyslogStats>,
    stopped: watch::Receiver<bool>,
}

/// Why a connection's session ended.
enum End {
    Stop,
    Broken(String),
}

impl Run {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(500);
        let mut failures_in_a_row = 0u32;
        loop {
            if *self.stopped.borrow() {
                return;
            }
            let conn = tokio::select! {
                c = self.dialer.connection() => c,
                _ = self.stopped.wait_for(|s| *s) => return,
            };
            let end = match conn {
                Ok(conn) => {
                    self.stats.connected.store(1, Ordering::Relaxed);
                    if failures_in_a_row > 0 {
                        tracing::info!("syslog: connected to {} again", self.cfg.address);
                    }
                    failures_in_a_row = 0;
                    backoff = Duration::from_millis(500);
                    let end = self.session(conn).await;
                    self.stats.connected.store(0, Ordering::Relaxed);
                    end
                }
                Err(e) => End::Broken(format!("connecting: {e:#}")),
            };
            match end {
                End::Stop => return,
                End::Broken(why) => {
                    self.stats
                        .connection_failures
                        .fetch_add(1, Ordering::Relaxed);
                    failures_in_a_row += 1;
                    // Said once per outage, not at every retry.
                    if failures_in_a_row == 1 {
                        tracing::warn!(
                            "syslog to {}: {why}; retrying, then resending from the last \
                             event it is known to have received",
                            self.cfg.address
                        );
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = self.stopped.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Send from the saved cursor until the connection breaks or the exporter stops.
    async fn session(&mut self, conn: Connection) -> End {
        // The cursor was saved at the start: an unreadable one now (a disk fault) resends
        // from the start of this run rather than skip anything.
        let after = self
            .src
            .cursor
            .load()
            .ok()
            .flatten()
            .unwrap_or(self.src.last_seq);
        // A new subscription per session, from a handle that does not keep the channel open
        // (nor hold its events in memory).
        let Some(live) = self.src.live.upgrade() else {
            return End::Stop;
        };
        let mut follower = Follower::new(self.src.journal.clone(), live.subscribe(), after);
        drop(live);
        let fd = conn.fd;
        let (mut rd, mut wr) = tokio::io::split(conn.stream);
        let mut probe = [0u8; 512];
        let mut stopped = self.stopped.clone();
        // For the waits inside a branch (the outer select's borrow lasts through them).
        let mut inner_stop = self.stopped.clone();
        // The event the cursor moves to next, and when; the last event written.
        let mut armed: Option<(u64, tokio::time::Instant)> = None;
        let mut latest: Option<u64> = None;
        loop {
            let settle_at = armed.map(|(_, at)| at);
            // Biased: a receiver that closed is noticed before anything more is written to it,
            // and the cursor moves even while a backlog is being sent.
            tokio::select! {
                biased;
                read = rd.read(&mut probe) => match read {
                    Ok(0) => return End::Broken("the receiver closed the connection".into()),
                    Ok(_) => {} // A receiver has nothing to say; ignore it if it does.
                    Err(e) => return End::Broken(format!("the connection broke: {e}")),
                },
                _ = stopped.wait_for(|s| *s) => return self.finish(&mut wr, fd, latest).await,
                () = tokio::time::sleep_until(settle_at.unwrap_or_else(tokio::time::Instant::now)),
                    if settle_at.is_some() =>
                {
                    let Some((seq, _)) = armed else { continue };
                    // Moved only once the receiver's TCP acknowledged every byte written.
                    if unacknowledged(fd) == Some(0) {
                        self.save(seq);
                        armed = latest
                            .filter(|&l| l > seq)
                            .map(|l| (l, tokio::time::Instant::now() + SETTLE));
                    } else {
                        armed = Some((seq, tokio::time::Instant::now() + RECHECK));
                    }
                }
                got = follower.next() => match got {
                    Ok(Some(r)) => {
                        let message = self.message(&r);
                        let sent = tokio::select! {
                            biased;
                            // Not sent: the cursor stays before it.
                            _ = inner_stop.wait_for(|s| *s) => {
                                return self.finish(&mut wr, fd, latest).await
                            }
                            sent = tokio::time::timeout(WRITE_TIMEOUT, self.send(&mut wr, message.as_deref())) => sent,
                        };
                        match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return End::Broken(format!("writing: {e}")),
                            Err(_) => {
                                return End::Broken(format!(
                                    "the receiver took nothing for {}s",
                                    WRITE_TIMEOUT.as_secs()
                                ));
                            }
                        }
                        let seq = follower.last();
                        latest = Some(seq);
                        armed.get_or_insert((seq, tokio::time::Instant::now() + SETTLE));
                    }
                    // The live channel closed: sensord stops.
                    Ok(None) => return self.finish(&mut wr, fd, latest).await,
                    Err(e) => {
                        tracing::warn!("syslog: reading the journal: {e}");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = inner_stop.wait_for(|s| *s) => {
                                return self.finish(&mut wr, fd, latest).await
                            }
                        }
                    }
                },
            }
        }
    }

    /// The framed message of an event, if it passes the filter and is young enough.
    fn message(&mut self, r: &StoredEvent) -> Option<Vec<u8>> {
        if !self.cfg.filter.matches(&r.meta) {
            return None;
        }
        if worker::too_old(r, self.cfg.max_age_secs) {
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let chain = self
            .chains
            .as_mut()
            .map(|c| c.of(&r.event))
            .unwrap_or_default();
        Some(frame(&self.sender.message(r, &chain)))
    }

    /// Write one framed message (none: the event is not for this receiver).
    async fn send<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        message: Option<&[u8]>,
    ) -> std::io::Result<()> {
        let Some(message) = message else {
            return Ok(());
        };
        wr.write_all(message).await?;
        wr.flush().await?;
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A clean stop: flush and close (2 s at most each), and record how far it got if the
    /// receiver acknowledged it all.
    async fn finish<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        fd: RawFd,
        latest: Option<u64>,
    ) -> End {
        let limit = Duration::from_secs(2);
        let flushed = matches!(tokio::time::timeout(limit, wr.flush()).await, Ok(Ok(())));
        let deadline = tokio::time::Instant::now() + limit;
        while flushed && unacknowledged(fd) != Some(0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let acknowledged = flushed && unacknowledged(fd) == Some(0);
        let _ = tokio::time::timeout(limit, wr.shutdown()).await;
        if let (true, Some(seq)) = (acknowledged, latest) {
            self.save(seq);
        }
        End::Stop
    }

    fn save(&self, seq: u64) {
        if let Err(e) = self.src.cursor.save(seq) {
            tracing::warn!("saving {}: {e}", self.src.cursor.path().display());
        }
    }
}
