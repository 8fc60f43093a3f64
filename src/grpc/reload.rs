//! Reloading what a server or client reads from files (certificates, keys, CA bundles, CRLs,
//! an authorization policy) when the files change or when asked, without a restart.
//!
//! A [`Reloader`] keeps a fingerprint of each watched item's files. [`Reloader::check`]
//! reloads the items whose files changed; [`Reloader::reload_all`] reloads every item (what a
//! SIGHUP asks for). A reload that fails is logged and the item keeps what it had: a
//! half-written or mismatched replacement never replaces a working one. Files are compared by
//! content, not by modification time, so two writes within one clock tick are still seen, and
//! so are the symlink swaps Kubernetes uses for mounted secrets.

use std::{
    fmt,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    io::Read as _,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle};

use crate::grpc::error::{error_chain, Error};

/// Something read from files that can be read again while in use.
pub trait Reload: Send + Sync + 'static {
    /// What it is, for logs and metrics ("server certificate", "authorization policy").
    fn what(&self) -> &str;

    /// The files it is read from.
    fn paths(&self) -> Vec<PathBuf>;

    /// Reads the files again and puts the result in force.
    ///
    /// # Errors
    /// Why the files cannot be used; what was in force before stays in force.
    fn reload(&self) -> Result<(), Error>;
}

/// Called after every reload attempt with what was reloaded and whether it worked.
pub type ReloadObserver = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// Watches the files of a set of [`Reload`] items.
#[derive(Default)]
pub struct Reloader {
    items: Vec<Watched>,
    observer: Option<ReloadObserver>,
}

struct Watched {
    item: Arc<dyn Reload>,
    seen: u64,
}

impl Reloader {
    /// A reloader watching nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches `item`, taking its files as they are now as already loaded.
    pub fn watch(mut self, item: Arc<dyn Reload>) -> Self {
        let seen = fingerprint(&item.paths());
        self.items.push(Watched { item, seen });
        self
    }

    /// Calls `observer` after every reload attempt (for metrics).
    pub fn on_reload(mut self, observer: ReloadObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Reloads the items whose files changed since they were last seen; returns how many
    /// reloads failed.
    pub fn check(&mut self) -> usize {
        self.reload_where(false)
    }

    /// Reloads every item whether its files changed or not; returns how many failed.
    pub fn reload_all(&mut self) -> usize {
        self.reload_where(true)
    }

    fn reload_where(&mut self, all: bool) -> usize {
        let mut failed = 0;
        for watched in &mut self.items {
            let paths = watched.item.paths();
            let now = fingerprint(&paths);
            if !all && now == watched.seen {
                continue;
            }
            // Seen even when the reload fails: a broken file is refused once, not every tick;
            // the next change (the rest of a rotation, a fix) is tried again.
            watched.seen = now;
            let what = watched.item.what();
            let files = paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let result = watched.item.reload();
            match &result {
                Ok(()) => tracing::info!(what, files, "reloaded"),
                Err(e) => {
                    failed += 1;
                    tracing::error!(
                        what,
                        files,
                        error = %error_chain(e),
                        "refusing the new files; keeping the ones in force"
                    );
                }
            }
            if let Some(observer) = &self.observer {
                observer(what, result.is_ok());
            }
        }
        failed
    }

    /// Checks the files every `interval` (never, when `None`) on a task of its own; the handle
    /// also reloads on demand (a SIGHUP).
    pub fn spawn(self, interval: Option<Duration>) -> ReloadHandle {
        let shared = Arc::new(Shared {
            reloader: Mutex::new(self),
            now: Notify::new(),
        });
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    let all = match interval {
                        Some(interval) => tokio::select! {
                            () = tokio::time::sleep(interval) => false,
                            () = shared.now.notified() => true,
                        },
                        None => {
                            shared.now.notified().await;
                            true
                        }
                    };
                    // File reads are small and few; a blocking thread would cost more.
                    shared.run(all);
                }
            }
        });
        ReloadHandle { shared, task }
    }
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what: Vec<&str> = self.items.iter().map(|w| w.item.what()).collect();
        f.debug_struct("Reloader").field("items", &what).finish()
    }
}

/// A running [`Reloader`]; dropping it stops the watching.
#[derive(Debug)]
pub struct ReloadHandle {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    reloader: Mutex<Reloader>,
    now: Notify,
}

impl Shared {
    fn run(&self, all: bool) -> usize {
        // A poisoned lock means a reload panicked; the reloader's state is still consistent.
        let mut reloader = self
            .reloader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if all {
            reloader.reload_all()
        } else {
            reloader.check()
        }
    }
}

impl ReloadHandle {
    /// Asks the watching task to reload everything now (what SIGHUP does), without waiting.
    pub fn reload_soon(&self) {
        self.shared.now.notify_one();
    }

    /// Reloads everything now, on this thread; returns how many reloads failed.
    pub fn reload_now(&self) -> usize {
        self.shared.run(true)
    }

    /// Checks the files now, on this thread; returns how many reloads failed.
    pub fn check_now(&self) -> usize {
        self.shared.run(false)
    }
}

impl Drop for ReloadHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Largest file read for a fingerprint: far above any certificate, key, CRL or policy, and a
/// bound on what a wrong path (a device, a huge log) can make us read.
const MAX_FILE: u64 = 64 * 1024 * 1024;

/// A hash of the files' contents; an unreadable file hashes as its error kind, so that it
/// coming back is a change.
fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for path in paths {
        let mut bytes = Vec::new();
        match std::fs::File::open(path).and_then(|f| f.take(MAX_FILE).read_to_end(&mut bytes)) {
            Ok(_) => bytes.hash(&mut hasher),
            Err(e) => format!("{:?}", e.kind()).hash(&mut hasher),
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counting {
        path: PathBuf,
        loads: AtomicUsize,
    }

    impl Reload for Counting {
        fn what(&self) -> &str {
            "counting"
        }
        fn paths(&self) -> Vec<PathBuf> {
            vec![self.path.clone()]
        }
        fn reload(&self) -> Result<(), Error> {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            if text.contains("broken") {
                return Err(Error::config("broken"));
            }
            self.loads.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn reloads_on_content_change_and_refuses_broken_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let item = Arc::new(Counting {
            path: path.clone(),
            loads: AtomicUsize::new(0),
        });
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let seen = outcomes.clone();
        let mut reloader =
            Reloader::new()
                .watch(item.clone())
                .on_reload(Arc::new(move |what, ok| {
                    seen.lock().unwrap().push((what.to_owned(), ok));
                }));
        assert_eq!(reloader.check(), 0);
        assert_eq!(item.loads.load(Ordering::SeqCst), 0, "unchanged: no reload");
        // Same length, same second: still a change.
        std::fs::write(&path, "two").unwrap();
        assert_eq!(reloader.check(), 0);
        assert_eq!(item.loads.load(Ordering::SeqCst), 1);
        std::fs::write(&path, "broken").unwrap();
        assert_eq!(reloader.check(), 1);
        assert_eq!(reloader.check(), 0, "a broken file is refused once");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(reloader.check(), 0, "a missing file reads as empty here");
        assert_eq!(reloader.reload_all(), 0);
        assert_eq!(item.loads.load(Ordering::SeqCst), 3);
        let outcomes = outcomes.lock().unwrap();
        let oks: Vec<bool> = outcomes.iter().map(|(_, ok)| *ok).collect();
        assert_eq!(oks, [true, false, true, true]);
    }
}
