//! Reaching the server: the parsed URL, connecting with backoff, error mapping, the read pool.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_postgres::config::Host;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, Connection, NoTls, Row, Socket, Statement};

use steward_store::{Error, Result};

use crate::PgOptions;

/// Where the store connects, and how it names that place in errors.
pub(crate) struct Target {
    config: Config,
    /// The URL as given, without its password.
    pub(crate) shown: String,
    /// `host:port` (or the socket directory), for "what failed where".
    pub(crate) addr: String,
    /// How long one connection attempt may take.
    connect_timeout: Duration,
    /// How long a call waits for the server to come back.
    pub(crate) patience: Duration,
    /// How long one transaction or read may wait for its answers.
    pub(crate) request_timeout: Duration,
}

/// A connection whose messages this process drives itself (the listener needs its notifications).
pub(crate) type RawConnection = Connection<Socket, NoTlsStream>;

impl Target {
    /// Parses `url` (a `postgres://` URL or `key=value` pairs). A URL that does not parse is
    /// [`Error::Invalid`], named without its password.
    pub(crate) fn parse(url: &str, opts: &PgOptions) -> Result<Target> {
        let shown = redact(url);
        let mut config: Config =
            url.parse().map_err(|e| Error::Invalid(format!("database URL `{shown}` is not valid: {e}")))?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            // Said here rather than as a failed handshake, which reads like the server's doing.
            return Err(Error::Invalid(format!(
                "database URL `{shown}` asks for TLS (`sslmode=require`), which Steward does not speak to \
                 PostgreSQL yet: reach the server over a private network or a local tunnel, without `sslmode`"
            )));
        }
        if config.get_application_name().is_none() {
            config.application_name("steward");
        }
        // Detect a server that vanished without closing the socket (a machine gone, a
        // partition) within about a minute instead of the kernel's two hours.
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10)).keepalives_retries(3);
        config.connect_timeout(opts.connect_timeout);
        if !opts.poll_only {
            // A session this store gave up on (a hung or cut-off connection) could otherwise
            // hold its run locks until the server's own keepalive gives up, two hours by
            // default: the server ends it once it sits idle in a transaction for twice the
            // time a transaction may take here. Poolers refuse startup options, hence not in
            // poll-only mode.
            let idle = opts.request_timeout.saturating_mul(2).as_millis();
            let options = format!("-c idle_in_transaction_session_timeout={idle} -c tcp_keepalives_idle=30");
            let options = match config.get_options() {
                Some(given) => format!("{given} {options}"),
                None => options,
            };
            config.options(&options);
        }
        let ports = config.get_ports();
        let addr = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match h {
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let addr = if addr.is_empty() { "localhost:5432 (default)".to_owned() } else { addr };
        Ok(Target {
            config,
            shown,
            addr,
            connect_timeout: opts.connect_timeout,
            patience: opts.reconnect_patience,
            request_timeout: opts.request_timeout,
        })
    }

    /// One connection attempt; its messages are driven by the caller.
    pub(crate) async fn connect_raw(&self) -> Result<(Client, RawConnection)> {
        // `connect_timeout` bounds each address; this bounds the whole attempt as well.
        match tokio::time::timeout(self.connect_timeout + Duration::from_secs(1), self.config.connect(NoTls)).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(self.unreachable(&e.to_string())),
            Err(_) => Err(self.unreachable(&format!("no answer within {:?}", self.connect_timeout))),
        }
    }

    /// One connection attempt; its messages are driven by a task of its own.
    pub(crate) async fn connect(&self) -> Result<Client> {
        let (client, connection) = self.connect_raw().await?;
        // The task ends when the client is dropped or the server goes away; the client then
        // reports itself closed and its owner connects again.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Connects, retrying with backoff until `deadline` (a server restarting takes a moment).
    pub(crate) async fn connect_until(&self, deadline: Instant) -> Result<Client> {
        let mut backoff = Backoff::new();
        loop {
            match self.connect().await {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() + backoff.peek() >= deadline => return Err(e),
                Err(_) => backoff.wait().await,
            }
        }
    }

    fn unreachable(&self, detail: &str) -> Error {
        Error::Unavailable {
            detail: format!("cannot connect to PostgreSQL at {} (database URL `{}`): {detail}", self.addr, self.shown),
        }
    }

    /// Maps a driver error, saying what failed, to what a caller can act on.
    pub(crate) fn error(&self, what: &str, e: &tokio_postgres::Error) -> Error {
        let Some(db) = e.as_db_error() else {
            // No answer from the server: the connection broke, timed out or was refused.
            return Error::Unavailable { detail: format!("PostgreSQL at {}: {what}: {e}", self.addr) };
        };
        let code = db.code().code();
        let detail = format!("{what}: {db}");
        match code.get(..2).unwrap_or_default() {
            // Integrity and data errors: the write itself is wrong (a NUL byte in a text, ...).
            "22" | "23" => Error::Invalid(detail),
            "25" if code == "25006" => Error::ReadOnly { path: self.shown.clone(), detail },
            // Syntax or missing objects: this database does not hold the schema this build expects.
            "42" | "XX" => Error::Corrupt { path: self.shown.clone(), detail },
            // Serialization failures, deadlocks, connection trouble, a server shutting down or
            // out of resources: retrying may help.
            _ => Error::Unavailable { detail: format!("PostgreSQL at {}: {detail}", self.addr) },
        }
    }
}

/// Parameters with their types, as every statement here is sent.
pub(crate) type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

/// A connection and the statements prepared on it. Each statement is parsed and planned once
/// per connection (the server's planning time dominated a write otherwise); a new connection
/// starts with an empty cache. PgBouncer 1.21+ in transaction mode handles such protocol-level
/// prepared statements (`max_prepared_statements`).
pub(crate) struct Session {
    client: Client,
    prepared: Mutex<HashMap<String, Statement>>,
    /// Transactions begun on it, for [`Session::replan_due`].
    transactions: std::sync::atomic::AtomicU64,
}

impl Session {
    pub(crate) fn new(client: Client) -> Session {
        Session { client, prepared: Mutex::new(HashMap::new()), transactions: Default::default() }
    }

    /// Whether the transaction about to begin should first drop the plans the server cached for
    /// this connection's statements (`DISCARD PLANS`; the statements stay prepared). A plan is
    /// cached from a statement's first executions, and on a new database those see empty
    /// tables, where a hash join over a sequential scan is cheapest: kept as the tables grow,
    /// such a plan turns every key lookup of a write into a scan of the whole table, until the
    /// server's statistics catch up (autovacuum's next look, a minute or more). Re-planned after
    /// 16, 64, 256, ... transactions, each plan fits tables of about the size they have by then,
    /// at the cost of a few plannings, ever rarer.
    pub(crate) fn replan_due(&self) -> bool {
        let n = self.transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        n >= 16 && n.is_power_of_two() && n.trailing_zeros().is_multiple_of(2)
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.prepared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn statement(&self, sql: &str, params: &Params<'_>) -> std::result::Result<Statement, tokio_postgres::Error> {
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        self.statement_typed(sql, &types).await
    }

    async fn statement_typed(
        &self,
        sql: &str,
        types: &[Type],
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        if let Some(st) = self.cache().get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare_typed(sql, types).await?;
        self.cache().insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let st = self.statement(sql, params).await?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        self.client.query(&st, &values).await
    }

    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> std::result::Result<Option<Row>, tokio_postgres::Error> {
        let st = self.statement(sql, params).await?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        self.client.query_opt(&st, &values).await
    }

    pub(crate) async fn query_one(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> std::result::Result<Row, tokio_postgres::Error> {
        let st = self.statement(sql, params).await?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        self.client.query_one(&st, &values).await
    }

    pub(crate) async fn execute(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let st = self.statement(sql, params).await?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        self.client.execute(&st, &values).await
    }

    pub(crate) async fn batch(&self, sql: &str) -> std::result::Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }
}

/// A parameter value a [`Flight`] owns until its statement is answered.
pub(crate) type Value = Box<dyn ToSql + Sync + Send>;

/// A parameter with its type.
pub(crate) fn val<T: ToSql + Sync + Send + 'static>(v: T, t: Type) -> (Value, Type) {
    (Box::new(v), t)
}

/// One statement's answer.
pub(crate) type Answer = std::result::Result<Vec<Row>, tokio_postgres::Error>;

/// Statements sent back to back and answered in order: one round trip for all of them.
///
/// The server runs them in the order they were added, each seeing the ones before (a row
/// locked by the first is locked for the rest). If one fails, the ones after it fail too
/// ("current transaction is aborted"), so the first error in order is the one that counts.
/// Every answer is read as it arrives: the driver stops reading the socket while one request's
/// answer waits unread, so awaiting them one by one could stall.
pub(crate) struct Flight<'a> {
    db: &'a Session,
    requests: Vec<Pin<Box<dyn Future<Output = Answer> + Send + 'a>>>,
}

impl<'a> Flight<'a> {
    pub(crate) fn new(db: &'a Session) -> Flight<'a> {
        Flight { db, requests: Vec::new() }
    }

    /// Adds transaction control (`SAVEPOINT`, ...) sent with the simple protocol.
    pub(crate) fn simple(&mut self, sql: String) -> usize {
        let client = self.db.client();
        self.requests.push(Box::pin(async move { client.batch_execute(&sql).await.map(|()| Vec::new()) }));
        self.requests.len() - 1
    }

    /// Puts transaction control before every statement added so far.
    pub(crate) fn simple_first(&mut self, sql: String) {
        let client = self.db.client();
        self.requests.insert(0, Box::pin(async move { client.batch_execute(&sql).await.map(|()| Vec::new()) }));
    }

    /// Adds a statement (prepared first if this connection has not seen it); returns its index.
    pub(crate) async fn query(
        &mut self,
        sql: &str,
        params: Vec<(Value, Type)>,
    ) -> std::result::Result<usize, tokio_postgres::Error> {
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        let st = self.db.statement_typed(sql, &types).await?;
        let client = self.db.client();
        let values: Vec<Value> = params.into_iter().map(|(v, _)| v).collect();
        self.requests.push(Box::pin(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect();
            client.query(&st, &refs).await
        }));
        Ok(self.requests.len() - 1)
    }

    /// Sends every statement, in order, and collects the answers in the same order.
    pub(crate) async fn send(self) -> Vec<Answer> {
        let mut requests = self.requests;
        let mut answers: Vec<Option<Answer>> = requests.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            // The first pass writes the requests in order; later passes pick up answers.
            let mut waiting = false;
            for (request, answer) in requests.iter_mut().zip(answers.iter_mut()) {
                if answer.is_none() {
                    match request.as_mut().poll(cx) {
                        Poll::Ready(a) => *answer = Some(a),
                        Poll::Pending => waiting = true,
                    }
                }
            }
            if waiting { Poll::Pending } else { Poll::Ready(()) }
        })
        .await;
        answers.into_iter().flatten().collect()
    }
}

/// Whether an error means the transaction is lost and may be run again as a whole: the
/// connection broke (or is being shut down), or the server chose it as a deadlock or
/// serialization victim.
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            matches!(code, "40001" | "40P01") || code.starts_with("08") || code.starts_with("57P")
        }
    }
}

/// Whether the connection an error came from can still be used.
pub(crate) fn connection_lost(client: &Client, e: &tokio_postgres::Error) -> bool {
    client.is_closed() || e.as_db_error().is_none_or(|db| db.code().code().starts_with("57P"))
}

/// Backoff between reconnection attempts: the first retry at once (a connection that was cut
/// is usually made again straight away), then 50 ms doubling to 2 s.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: Duration::ZERO }
    }

    pub(crate) fn peek(&self) -> Duration {
        self.next
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
    }

    pub(crate) fn reset(&mut self) {
        self.next = Duration::ZERO;
    }
}

/// The URL without its password, for messages: `postgres://user:secret@h/db` shows as
/// `postgres://user:***@h/db`, and `password=secret` in key=value form as `password=***`.
pub(crate) fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    // `password=` as a query parameter or a key=value pair.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let starts_word = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b' ');
        result.push_str(&rest[..i + "password=".len()]);
        rest = &rest[i + "password=".len()..];
        if starts_word {
            let end = rest.find(['&', ' ']).unwrap_or(rest.len());
            result.push_str("***");
            rest = &rest[end..];
        }
    }
    result.push_str(rest);
    result
}

/// A few connections for reads, made on demand and kept while they work.
pub(crate) struct Readers {
    idle: Mutex<Vec<Session>>,
    permits: Semaphore,
}

impl Readers {
    pub(crate) fn new(size: usize) -> Readers {
        Readers { idle: Mutex::new(Vec::new()), permits: Semaphore::new(size.max(1)) }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one query on a pooled connection. A read is safe to repeat, so one that fails
    /// because its connection broke runs again on a new one (after a server restart, the
    /// pool's connections are all stale at once).
    pub(crate) async fn query(&self, target: &Target, what: &str, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Unavailable { detail: "the read pool is closed".into() })?;
        let deadline = Instant::now() + target.patience;
        let mut backoff = Backoff::new();
        loop {
            let pooled = {
                let mut idle = self.idle();
                idle.retain(|c| !c.is_closed());
                idle.pop()
            };
            let session = match pooled {
                Some(s) => s,
                None => Session::new(target.connect_until(deadline).await?),
            };
            let answer = match tokio::time::timeout(target.request_timeout, session.query(sql, params)).await {
                Ok(answer) => answer,
                Err(_) => {
                    // A hung connection is dropped, not returned to the pool.
                    return Err(Error::Unavailable {
                        detail: format!(
                            "PostgreSQL at {}: {what}: no answer within {:?}",
                            target.addr, target.request_timeout
                        ),
                    });
                }
            };
            match answer {
                Ok(rows) => {
                    self.idle().push(session);
                    return Ok(rows);
                }
                Err(e) if connection_lost(session.client(), &e) && Instant::now() + backoff.peek() < deadline => {
                    backoff.wait().await;
                }
                Err(e) => {
                    if !session.is_closed() {
                        self.idle().push(session);
                    }
                    return Err(target.error(what, &e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgresql://u@h/db?password=secret&x=1"), "postgresql://u@h/db?password=***&x=1");
        assert_eq!(redact("host=h user=u password=secret dbname=d"), "host=h user=u password=*** dbname=d");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn a_bad_url_is_named_without_its_password() {
        let err = Target::parse("postgres://u:secret@h:notaport/db", &PgOptions::default()).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("postgres://u:***@h:notaport/db"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }

    /// No TLS yet: a URL that requires it is refused before any connection, saying so.
    #[test]
    fn a_url_that_requires_tls_is_refused_with_the_reason() {
        let err = Target::parse("postgres://u:secret@h/db?sslmode=require", &PgOptions::default()).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("sslmode=require") && msg.contains("does not speak"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
        assert!(Target::parse("postgres://u@h/db?sslmode=prefer", &PgOptions::default()).is_ok());
    }
}
