//! Every wire type of `outpost-proto` decoded from arbitrary JSON bytes.
//!
//! Property: decoding never panics, and whatever decodes re-encodes to JSON
//! that decodes to an equal value and re-encodes to the same bytes (the
//! contract promises deterministic output, so a second trip must be a
//! fixed point).

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use outpost_proto::{
    App, AppSpec, CertInfo, CertSpec, CertUpload, CreateApp, CreateTenant, Delta, Deployment,
    ErrorBody, GuestLogLine, Limits, NodeReport, NodeStatus, Rollback, Rollout, SetEnv,
    SetOutbound, SetRoutes, Snapshot, Tenant, TenantCreated, WatchEvent,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T>(data: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let json = serde_json::to_vec(&value).expect("a decoded value re-encodes");
    let again: T = match serde_json::from_slice(&json) {
        Ok(again) => again,
        Err(e) => panic!(
            "{} re-encoded as {:?} does not decode: {e}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&json)
        ),
    };
    assert_eq!(
        again,
        value,
        "{} changed on a round trip",
        std::any::type_name::<T>()
    );
    let json_again = serde_json::to_vec(&again).expect("re-encodes");
    assert_eq!(
        json_again,
        json,
        "{} encodes unstably",
        std::any::type_name::<T>()
    );
}

fuzz_target!(|data: &[u8]| {
    // Every type sees every input: the JSON parser rejects most inputs in
    // the first few bytes, so this costs little and lets one corpus entry
    // that happens to fit a type reach that type's code.
    round_trip::<ErrorBody>(data);
    round_trip::<Limits>(data);
    round_trip::<CreateTenant>(data);
    round_trip::<TenantCreated>(data);
    round_trip::<Tenant>(data);
    round_trip::<Vec<Tenant>>(data);
    round_trip::<CreateApp>(data);
    round_trip::<App>(data);
    round_trip::<Vec<App>>(data);
    round_trip::<SetRoutes>(data);
    round_trip::<SetEnv>(data);
    round_trip::<SetOutbound>(data);
    round_trip::<Rollback>(data);
    round_trip::<Deployment>(data);
    round_trip::<Vec<Deployment>>(data);
    round_trip::<GuestLogLine>(data);
    round_trip::<Vec<GuestLogLine>>(data);
    round_trip::<AppSpec>(data);
    round_trip::<CertUpload>(data);
    round_trip::<CertInfo>(data);
    round_trip::<Vec<CertInfo>>(data);
    round_trip::<CertSpec>(data);
    round_trip::<Snapshot>(data);
    round_trip::<Delta>(data);
    round_trip::<WatchEvent>(data);
    round_trip::<NodeStatus>(data);
    round_trip::<Vec<NodeStatus>>(data);
    round_trip::<Rollout>(data);
    round_trip::<NodeReport>(data);
});
