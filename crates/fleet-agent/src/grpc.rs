//! The agent as a client of the coordinators: `AgentService` over one channel per endpoint.
//! The only module of the crate that names `fleet_api::proto` types (a test in fleet-api
//! checks it); the rest of the agent sees fleet-core's [`Assignment`] and [`StatusReport`].

use std::time::Duration;

use fleet_api::convert;
use fleet_api::limits::MAX_RESPONSE_BYTES;
use fleet_api::proto::agent_service_client::AgentServiceClient;
use fleet_api::proto::{ReportStatusRequest, RequestCertificateRequest, WatchAssignmentsRequest};
use fleet_core::{Assignment, StatusReport};
use fleet_identity::Transport;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

/// How long a status report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

fn endpoint(address: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Transport::endpoint(address)?
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// A connection to one coordinator's `AgentService`. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    client: AgentServiceClient<Channel>,
}

/// One version of a cluster's assignments, as `WatchAssignments` sends it.
pub struct AssignmentSet {
    /// Grows with every change of the set (see `AssignmentSet.version` in agent.proto).
    pub version: u64,
    /// The assignments that converted; a malformed one is logged and left out.
    pub assignments: Vec<Assignment>,
}

/// An open `WatchAssignments` stream.
pub struct AssignmentStream {
    stream: Streaming<fleet_api::proto::AssignmentSet>,
}

fn failed(status: tonic::Status) -> String {
    format!("{}: {}", status.code(), status.message())
}

impl Coordinator {
    /// Connects to the coordinator at `address` (HOST:PORT) over `transport`.
    ///
    /// # Errors
    /// Why the connection failed, as one line (a refused certificate included).
    pub async fn connect(transport: &Transport, address: &str) -> Result<Self, String> {
        let endpoint = endpoint(address).map_err(|e| e.to_string())?;
        let channel = transport
            .connect(endpoint)
            .await
            .map_err(|e| fleet_identity::tls::describe(&e))?;
        Ok(Coordinator {
            client: AgentServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
        })
    }

    /// Opens `WatchAssignments` for `cluster`, telling the node the version already held.
    ///
    /// # Errors
    /// The refusal (code and message), e.g. NOT_FOUND for a cluster not registered.
    pub async fn watch(
        &mut self,
        cluster: &str,
        since_version: u64,
    ) -> Result<AssignmentStream, String> {
        let stream = self
            .client
            .watch_assignments(WatchAssignmentsRequest {
                cluster: cluster.to_string(),
                since_version,
            })
            .await
            .map_err(failed)?
            .into_inner();
        Ok(AssignmentStream { stream })
    }

    /// Sends `reports` of `cluster` (at most `fleet_core::limits::MAX_REPORTS_PER_CALL`):
    /// how many changed the replicated status.
    ///
    /// # Errors
    /// The refusal or transport failure, as one line.
    pub async fn report(&mut self, cluster: &str, reports: &[StatusReport]) -> Result<u32, String> {
        let mut request = tonic::Request::new(ReportStatusRequest {
            cluster: cluster.to_string(),
            reports: reports.iter().map(convert::status_report).collect(),
        });
        request.set_timeout(REPORT_TIMEOUT);
        self.client
            .report_status(request)
            .await
            .map(|r| r.into_inner().committed)
            .map_err(failed)
    }
}

/// A certificate a coordinator signed for this agent.
pub struct SignedCertificate {
    pub certificate_pem: String,
    pub ca_pem: String,
}

/// Why a certificate request failed: `permanent` when asking again with the same credential
/// cannot help (a used or expired join token, a refused certificate).
pub struct RequestFailed {
    pub permanent: bool,
    pub message: String,
}

impl Coordinator {
    /// Asks for a certificate for the key that signed `csr_pem`, with the cluster's join token
    /// (`join_token`, sent as a bearer token) or, for a renewal, with the transport's current
    /// certificate.
    ///
    /// # Errors
    /// The refusal; permanent for UNAUTHENTICATED and PERMISSION_DENIED.
    pub async fn request_certificate(
        &mut self,
        csr_pem: &str,
        join_token: Option<&str>,
    ) -> Result<SignedCertificate, RequestFailed> {
        let mut request = tonic::Request::new(RequestCertificateRequest {
            csr_pem: csr_pem.to_string(),
        });
        request.set_timeout(REPORT_TIMEOUT);
        if let Some(token) = join_token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| RequestFailed {
                    permanent: true,
                    message: "the join token holds characters a header cannot carry".into(),
                })?;
            request.metadata_mut().insert("authorization", value);
        }
        match self.client.request_certificate(request).await {
            Ok(response) => {
                let r = response.into_inner();
                Ok(SignedCertificate {
                    certificate_pem: r.certificate_pem,
                    ca_pem: r.ca_pem,
                })
            }
            Err(status) => Err(RequestFailed {
                permanent: matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ),
                message: failed(status),
            }),
        }
    }
}

impl AssignmentStream {
    /// The next set; `None` when the node ended the stream.
    ///
    /// # Errors
    /// The stream's failure, as one line.
    pub async fn next(&mut self) -> Result<Option<AssignmentSet>, String> {
        let Some(set) = self.stream.message().await.map_err(failed)? else {
            return Ok(None);
        };
        let mut assignments = Vec::with_capacity(set.assignments.len());
        for a in set.assignments {
            match convert::assignment_from_wire(a) {
                Ok(a) => assignments.push(a),
                Err(error) => tracing::error!(%error, "ignoring a malformed assignment"),
            }
        }
        Ok(Some(AssignmentSet {
            version: set.version,
            assignments,
        }))
    }
}
