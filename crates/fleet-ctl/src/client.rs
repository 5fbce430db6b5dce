//! The connection to the coordinators: endpoint failover, the actor header, timeouts, and
//! errors that carry the coordinator's hint and an exit code.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleet_node::convert::{ACTOR_BIN_METADATA, ACTOR_METADATA, HINT_METADATA};
use fleet_node::proto::GetCoordinatorStatusRequest;
use fleet_node::proto::GetCoordinatorStatusResponse;
use fleet_node::proto::fleet_service_client::FleetServiceClient;
use fleet_node::proto::promotion_service_client::PromotionServiceClient;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// How long to wait for a TCP connection to one endpoint before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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
}

impl CtlError {
    fn from_status(status: Status) -> Self {
        let hint = status
            .metadata()
            .get(HINT_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
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
                _ => 1,
            },
            CtlError::Unreachable { .. } => 5,
        }
    }

    pub fn hint(&self) -> Option<&str> {
        match self {
            CtlError::Status { hint, .. } => hint.as_deref(),
            CtlError::Unreachable { .. } => {
                Some("check --endpoints (or FLEET_ENDPOINTS) and that a coordinator runs there")
            }
        }
    }
}

/// Wraps a request message with the actor header and the timeout.
#[derive(Clone)]
pub struct Req {
    actor: String,
    timeout: Duration,
}

impl Req {
    pub fn wrap<M>(&self, message: M) -> Request<M> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        // Names beyond printable ASCII (kåre) travel as binary metadata.
        if self.actor.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            if let Ok(value) = self.actor.parse() {
                request.metadata_mut().insert(ACTOR_METADATA, value);
            }
        } else {
            request.metadata_mut().insert_bin(
                ACTOR_BIN_METADATA,
                tonic::metadata::MetadataValue::from_bytes(self.actor.as_bytes()),
            );
        }
        request
    }
}

pub struct Client {
    endpoints: Vec<String>,
    req: Req,
    /// The endpoint that answered last; tried first.
    preferred: AtomicUsize,
}

impl Client {
    pub fn new(endpoints: Vec<String>, actor: String, timeout: Duration) -> Self {
        Client {
            endpoints,
            req: Req { actor, timeout },
            preferred: AtomicUsize::new(0),
        }
    }

    async fn connect(address: &str) -> Result<Channel, String> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("{address}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT);
        endpoint
            .connect()
            .await
            .map_err(|e| format!("{address}: {e}"))
    }

    /// Calls the FleetService on the endpoints in turn until one answers with anything other
    /// than UNAVAILABLE (which means nothing was done and another node may do better).
    pub async fn fleet<T, F, Fut>(&self, call: F) -> Result<T, CtlError>
    where
        F: Fn(FleetServiceClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call(
            |channel| {
                FleetServiceClient::new(channel)
                    .max_decoding_message_size(fleet_node::service::MAX_RESPONSE_BYTES)
            },
            call,
        )
        .await
    }

    /// The same for the PromotionService.
    pub async fn promotion<T, F, Fut>(&self, call: F) -> Result<T, CtlError>
    where
        F: Fn(PromotionServiceClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call(
            |channel| {
                PromotionServiceClient::new(channel)
                    .max_decoding_message_size(fleet_node::service::MAX_RESPONSE_BYTES)
            },
            call,
        )
        .await
    }

    async fn call<C, T, F, Fut>(&self, make: impl Fn(Channel) -> C, call: F) -> Result<T, CtlError>
    where
        F: Fn(C, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_unavailable = None;
        let mut problems = Vec::new();
        for i in 0..n {
            let index = (first + i) % n;
            let address = &self.endpoints[index];
            let channel = match Self::connect(address).await {
                Ok(c) => c,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            match call(make(channel), self.req.clone()).await {
                Ok(response) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Err(status) if status.code() == Code::Unavailable => {
                    problems.push(format!("{address}: {}", status.message()));
                    last_unavailable = Some(status);
                }
                Err(status) => return Err(CtlError::from_status(status)),
            }
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
        let channel = Self::connect(address).await.ok()?;
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
