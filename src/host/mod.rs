//! The Azure Functions custom-handler protocol: typed envelopes in,
//! `{"Outputs","Logs","ReturnValue"}` out, readiness, and the router.

pub mod envelope;
pub mod logs;
pub mod server;

pub use envelope::{
    HostTime, InvocationRequest, InvocationResponse, QueueMetadata, QueueTrigger, TimerInfo,
};
pub use server::{
    Application, FailureRecorder, FunctionError, Functions, Invocation, Outcome, PermanentFailure,
    TriggerKind,
};
