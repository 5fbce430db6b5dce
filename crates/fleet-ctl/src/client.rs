//! The connection to the coordinators: endpoint failover, mutual TLS, timeouts, and
//! errors that carry the coordinator's hint and an exit code.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleet_api::proto::GetCoordinatorStatusRequest;
use fleet_api::proto::GetCoordinatorStatusResponse;
use fleet_api::proto::fleet_service_client::FleetServiceClient;
use fleet_api::proto::promotion_service_client::PromotionServiceClient;
use fleet_identity::Transport;
use thiserror::Error;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// How long to wait for a connection (TCP and the HTTP/2 handshake) to one endpoint before
/// trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one endpoint has to answer a read before the next is tried. A stopped process
/// still completes the TCP handshake (the kernel does it), so only an answer tells a live node
/// from a hung one; a linearizable read on a healthy node takes milliseconds, or an election
/// (about a second) when the leader just changed.
const READ_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a call changes anything: a write is tried on the next endpoint only when it surely
/// was not sent; a read whenever an endpoint does not answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

#[derive(Debug, Error)]
pub enum CtlError {
    #[error("{message}")]
    Status {
        code: Code,
        message: String,
        hint: Option<String>,
    },
    #[error("no coordinator answered at {endpoints}: {detail}")]
    Unreachable { endpoints: String, detail: String },
    /// `why` is the node's own account ("…: the leader did not answer") or empty when the
    /// node itself did not answer in time.
    #[error(
        "the write was sent to {endpoint}, which gave no outcome after {waited_ms} ms{why}: it may or may not have been applied"
    )]
    UnknownOutcome {
        endpoint: String,
        waited_ms: u128,
        why: String,
    },
}

impl CtlError {
    fn from_status(status: Status) -> Self {
        let hint = fleet_api::status::hint(&status).map(str::to_string);
        CtlError::Status {
            code: status.code(),
            message: status.message().to_string(),
            hint,
        }
    }

    /// See the exit codes in main.rs.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Status { code, .. } => match code {
                Code::InvalidArgument | Code::OutOfRange => 2,
                Code::NotFound => 3,
                Code::AlreadyExists | Code::FailedPrecondition => 4,
                Code::Unavailable => 5,
                Code::Unauthenticated | Code::PermissionDenied => 7,
                _ => 1,
            },
            CtlError::Unreachable { .. } => 5,
            CtlError::UnknownOutcome { .. } => 6,
        }
    }

    pub fn hint(&self) -> Option<&str> {
        match self {
            CtlError::Status { hint, .. } => hint.as_deref(),
            CtlError::Unreachable { .. } => {
                Some("check --endpoints (or FLEET_ENDPOINTS) and that a coordinator runs there")
            }
            CtlError::UnknownOutcome { .. } => Some(
                "look before repeating it: `fleet-ctl audit` lists every applied change, and the \
                 matching list or status command shows the state",
            ),
        }
    }
}

/// Wraps a request message with the timeout.
#[derive(Clone)]
pub struct Req {
    timeout: Duration,
    /// `Bearer TOKEN`, sent as `authorization` metadata (RFC 6750 section 2.1).
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Req {
    pub fn wrap<M>(&self, message: M) -> Request<M> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        request
    }
}

fn fleet_client(channel: Channel) -> FleetServiceClient<Channel> {
    FleetServiceClient::new(channel)
        .max_decoding_message_size(fleet_api::limits::MAX_RESPONSE_BYTES)
}

fn promotion_client(channel: Channel) -> PromotionServiceClient<Channel> {
    PromotionServiceClient::new(channel)
        .max_decoding_message_size(fleet_api::limits::MAX_RESPONSE_BYTES)
}

/// Why there is no connection to an endpoint; `hung` when it did not answer in time (as
/// opposed to refusing the connection or the certificate).
struct Unconnected {
    detail: String,
    hung: bool,
}

pub struct Client {
    endpoints: Vec<String>,
    transport: Transport,
    req: Req,
    /// The endpoint that answered last; tried first.
    preferred: AtomicUsize,
}

impl Client {
    /// # Panics
    /// When `token` cannot be metadata; `identity::resolve` has checked its shape.
    pub fn new(
        endpoints: Vec<String>,
        transport: Transport,
        token: Option<&str>,
        timeout: Duration,
    ) -> Self {
        let bearer = token.map(|t| {
            format!("Bearer {}", t.trim())
                .parse()
                .expect("a checked token is ASCII")
        });
        Client {
            endpoints,
            transport,
            req: Req { timeout, bearer },
            preferred: AtomicUsize::new(0),
        }
    }

    /// A connection to one endpoint, or why there is none; nothing has been sent on failure.
    async fn connect(&self, address: &str) -> Result<Channel, Unconnected> {
        let endpoint = Transport::endpoint(address)
            .map_err(|e| Unconnected {
                detail: format!("{address}: {e}"),
                hung: false,
            })?
            .connect_timeout(CONNECT_TIMEOUT);
        let started = tokio::time::Instant::now();
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, self.transport.connect(endpoint));
        let detail = match connected.await {
            Ok(Ok(channel)) => return Ok(channel),
            Ok(Err(e)) => fleet_identity::tls::describe(&e),
            Err(_) => format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
        };
        // Refused connections and certificates fail at once; only silence takes this long.
        Err(Unconnected {
            detail: format!("{address}: {detail}"),
            hung: started.elapsed() >= CONNECT_TIMEOUT.mul_f32(0.9),
        })
    }

    /// A write to the FleetService: the endpoints in turn until one answers with anything
    /// other than UNAVAILABLE (which means nothing was done and another node may do better).
    /// The next endpoint is tried only when the write surely was not sent; a write that was
    /// sent and got no answer within the timeout is [`CtlError::UnknownOutcome`].
    pub async fn fleet<T, F, Fut>(&self, call: F) -> Result<T, CtlError>
    where
        F: Fn(FleetServiceClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call(Kind::Write, fleet_client, call).await
    }

    /// A read from the FleetService: as [`Client::fleet`], but an endpoint that does not answer
    /// within [`READ_ATTEMPT_TIMEOUT`] is passed over (with a warning naming it) for the next.
    pub async fn fleet_read<T, F, Fut>(&self, call: F) -> Result<T, CtlError>
    where
        F: Fn(FleetServiceClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call(Kind::Read, fleet_client, call).await
    }

    /// A write to the PromotionService, as [`Client::fleet`].
    pub async fn promotion<T, F, Fut>(&self, call: F) -> Result<T, CtlError>
    where
        F: Fn(PromotionServiceClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call(Kind::Write, promotion_client, call).await
    }

    /// A read from the PromotionService, as [`Client::fleet_read`].
    pub async fn promotion_read<T, F, Fut>(&self, call: F) -> Result<T, CtlError>
    where
        F: Fn(PromotionServiceClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call(Kind::Read, promotion_client, call).await
    }

    async fn call<C, T, F, Fut>(
        &self,
        kind: Kind,
        make: impl Fn(Channel) -> C,
        call: F,
    ) -> Result<T, CtlError>
    where
        F: Fn(C, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.req.timeout;
        let mut last_unavailable = None;
        let mut problems = Vec::new();
        for i in 0..n {
            let index = (first + i) % n;
            let address = &self.endpoints[index];
            let channel = match self.connect(address).await {
                Ok(c) => c,
                Err(Unconnected { detail, hung }) => {
                    if hung && i + 1 < n {
                        // A stopped process completes the TCP handshake (the kernel does it) but
                        // never the TLS one: it did not answer, as a read would say.
                        eprintln!(
                            "warning: {address} did not answer within {} ms (no TLS handshake); \
                             trying the next endpoint",
                            CONNECT_TIMEOUT.as_millis()
                        );
                    }
                    problems.push(detail);
                    continue;
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = match kind {
                Kind::Read => left.min(READ_ATTEMPT_TIMEOUT),
                Kind::Write => left,
            };
            let req = Req {
                timeout: attempt,
                bearer: self.req.bearer.clone(),
            };
            // The request carries the attempt's deadline (grpc-timeout; a call may set a longer
            // one, as `coordinator add` does for its catch-up), which tonic enforces on this side
            // too and the node honours. A read is also cut off here, whatever the call set.
            let sent_at = tokio::time::Instant::now();
            let mut why = String::new();
            let answer = match kind {
                Kind::Read => tokio::time::timeout(attempt, call(make(channel), req)).await,
                Kind::Write => Ok(call(make(channel), req).await),
            };
            match answer {
                Ok(Ok(response)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if status.code() == Code::Unavailable => {
                    problems.push(format!("{address}: {}", status.message()));
                    last_unavailable = Some(status);
                    continue;
                }
                // No answer in time: tonic's "Timeout expired", the node's deadline, or ours.
                Ok(Err(status))
                    if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) =>
                {
                    why = format!(" ({})", status.message());
                }
                Ok(Err(status)) => return Err(CtlError::from_status(status)),
                Err(_elapsed) => why.clear(),
            }
            if kind == Kind::Write {
                return Err(CtlError::UnknownOutcome {
                    endpoint: address.clone(),
                    waited_ms: sent_at.elapsed().as_millis(),
                    why,
                });
            }
            eprintln!(
                "warning: {address} did not answer within {} ms; trying the next endpoint",
                attempt.as_millis()
            );
            problems.push(format!(
                "{address}: no answer within {} ms",
                attempt.as_millis()
            ));
        }
        match last_unavailable {
            Some(status) => Err(CtlError::from_status(status)),
            None => Err(CtlError::Unreachable {
                endpoints: self.endpoints.join(","),
                detail: problems.join("; "),
            }),
        }
    }

    /// One node's own status, or None when it does not answer within a second.
    pub async fn status_of(&self, address: &str) -> Option<GetCoordinatorStatusResponse> {
        let channel = self.connect(address).await.ok()?;
        let mut client = FleetServiceClient::new(channel);
        let mut request = Request::new(GetCoordinatorStatusRequest {});
        request.set_timeout(Duration::from_secs(1));
        client
            .get_coordinator_status(request)
            .await
            .ok()
            .map(|r| r.into_inner())
    }
}
