//! `hostcall_resp_set_*`: the outgoing response (handle 0). Bad handles,
//! codes, header names or values answer `Invalid`; bad pointers trap.

use bytes::Bytes;
use http::StatusCode;
use wasmtime::{Caller, Linker};

use super::memory::{read, read_slices};
use super::{HostcallError, HostcallStatus, MODULE, headers};
use crate::executor::Sandbox;

pub fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "hostcall_resp_set_response_code", |mut caller: Caller<'_, Sandbox>, resp: i32, code: i32| -> i32 {
        let status = u16::try_from(code).ok().filter(|code| (100..=999).contains(code)).and_then(|code| StatusCode::from_u16(code).ok());
        match (resp, status) {
            (0, Some(status)) => {
                caller.data_mut().session.response.status = status;
                HostcallStatus::Ok.into()
            }
            _ => HostcallStatus::Invalid.into(),
        }
    })?;
    linker.func_wrap(
        MODULE,
        "hostcall_resp_set_header",
        |mut caller: Caller<'_, Sandbox>,
         resp: i32,
         name_ptr: i32,
         name_len: i32,
         values_ptr: i32,
         values_count: i32|
         -> wasmtime::Result<i32> {
            const CALL: &str = "hostcall_resp_set_header";
            let name = read(&caller, name_ptr, name_len, CALL)?;
            let values = read_slices(&caller, values_ptr, values_count, CALL)?;
            if resp != 0 {
                return Ok(HostcallStatus::Invalid.into());
            }
            Ok(headers::set(&mut caller.data_mut().session.response.headers, &name, values).into())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "hostcall_resp_set_body",
        |mut caller: Caller<'_, Sandbox>, resp: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            const CALL: &str = "hostcall_resp_set_body";
            let body = read(&caller, ptr, len, CALL)?;
            if resp != 0 {
                return Ok(HostcallStatus::Invalid.into());
            }
            let session = &mut caller.data_mut().session;
            if body.len() > session.max_response_bytes {
                return Err(HostcallError::ResponseTooLarge { len: body.len(), limit: session.max_response_bytes }.into());
            }
            session.response.body = Bytes::from(body);
            Ok(HostcallStatus::Ok.into())
        },
    )?;
    Ok(())
}
