//! Client sessions (`Game.Session`): a client's writes, guesses and reads on one long-lived
//! stream. Each request runs as its own task through the same handler as its unary call, so
//! it is answered exactly as that call would be; answers go back as they complete, matched
//! by the client's request id. A handler's gRPC error becomes the answer's `error` (it must
//! not end the other requests of the session).

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use crate::service::NodeServices;
use guessgame_wire::proto::{self as pb, game_server::Game, ErrorKind};

/// Answers waiting for the client to read them; a session that does not read is not served
/// further (its requests wait).
const ANSWERS: usize = 1024;

pub type SessionStream = ReceiverStream<Result<pb::SessionResponse, Status>>;

fn status_error(status: Status) -> pb::Error {
    let kind = match status.code() {
        tonic::Code::InvalidArgument => ErrorKind::InvalidArgument,
        tonic::Code::Unavailable => ErrorKind::NoLeader,
        _ => ErrorKind::Internal,
    };
    pb::Error {
        kind: kind as i32,
        message: status.message().to_string(),
        retryable: false,
    }
}

impl NodeServices {
    pub(crate) fn serve_session(
        &self,
        mut inbound: Streaming<pb::SessionRequest>,
    ) -> SessionStream {
        let (answers, stream) = mpsc::channel(ANSWERS);
        let services = self.clone();
        let mut closing = self.closing();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    // The server stops: end the session (its graceful shutdown waits for it).
                    _ = closing.wait_for(|c| *c) => break,
                };
                let req = match next {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = answers.send(Err(status)).await;
                        break;
                    }
                };
                let services = services.clone();
                let answers = answers.clone();
                tokio::spawn(async move {
                    let result = services.answer(req.op).await;
                    let answer = result.map(|result| pb::SessionResponse {
                        id: req.id,
                        result: Some(result),
                    });
                    let _ = answers.send(answer).await;
                });
            }
        });
        ReceiverStream::new(stream)
    }

    async fn answer(
        &self,
        op: Option<pb::session_request::Op>,
    ) -> Result<pb::session_response::Result, Status> {
        use pb::session_request::Op;
        use pb::session_response::Result as R;
        let Some(op) = op else {
            return Err(Status::invalid_argument(
                "a session request without an operation",
            ));
        };
        Ok(match op {
            Op::Write(w) => R::Write(match self.write(Request::new(w)).await {
                Ok(r) => r.into_inner(),
                Err(s) => pb::WriteResponse {
                    error: Some(status_error(s)),
                    ..Default::default()
                },
            }),
            Op::Guess(g) => R::Guess(match self.guess(Request::new(g)).await {
                Ok(r) => r.into_inner(),
                Err(s) => pb::GuessResponse {
                    error: Some(status_error(s)),
                    ..Default::default()
                },
            }),
            Op::Read(r) => R::Read(match self.read(Request::new(r)).await {
                Ok(r) => r.into_inner(),
                Err(s) => pb::ReadResponse {
                    error: Some(status_error(s)),
                    ..Default::default()
                },
            }),
        })
    }
}
