//! The call side of batches (the rules are in `billing::batch`): before a call runs, a batch
//! input upload is read, and a batch is given the model its input file names.
//!
//! Invariants:
//! - an upload whose form says `purpose` = `batch` is refused (400) unless its file is one
//!   model's chat requests; the vendor never receives a file the gateway could not price;
//! - a call of op `batch` names its input file by its route's affinity, and only a file its
//!   user uploaded through the gateway as a batch input is taken (another user's, or one the
//!   gateway never read, is refused before any key is chosen); the call is then the file's
//!   model's, so the channel must serve it, and the consumer's model limits and the model's
//!   price apply to it.

use crate::affinity::{database_unavailable, not_found, Affinity};
use crate::billing::batch::{BatchInput, BATCH_OP};
use crate::exchange::CallError;
use crate::store::{objects, Db};
use crate::CallRequest;

/// Reads what a batch call or a batch input upload needs: for op `batch`, its input file's
/// summary (and sets the call's model); for an upload, the summary to keep with its file.
pub(crate) async fn prepare(db: &Db, r: &mut CallRequest) -> Result<(Option<BatchInput>, Option<String>), CallError> {
    if r.op == BATCH_OP {
        let Affinity::Object(file) = &r.affinity else {
            return Err(CallError::plugin("a batch route names its input file by its affinity; this one names none"));
        };
        let kept =
            objects::batch_input(db, r.plugin.name(), r.consumer.user_id, file).await.map_err(database_unavailable)?;
        let summary = match kept {
            None => return Err(not_found(file)),
            Some(None) => {
                return Err(CallError {
                    param: Some("input_file_id"),
                    ..CallError::bad_request(format!(
                        "The file '{file}' was not uploaded with purpose 'batch': upload the batch's requests as a file with purpose 'batch' first."
                    ))
                })
            }
            Some(Some(summary)) => summary,
        };
        let input: BatchInput = serde_json::from_str(&summary)
            .map_err(|e| CallError::plugin(format!("the kept summary of a batch input file is unreadable: {e}")))?;
        // The route named no model, so the channel was chosen without one: it must serve this.
        if !r.channel.models.contains(&input.model) {
            return Err(CallError::new(
                404,
                "invalid_request_error",
                "model_not_found",
                format!("The batch's model '{}' is not served by channel '{}'.", input.model, r.channel.name),
            ));
        }
        r.model = input.model.clone();
        return Ok((Some(input), None));
    }
    let Some(form) = r.form.as_ref().filter(|f| f.text("purpose") == Some(BATCH_OP)) else {
        return Ok((None, None));
    };
    let file = form.files.iter().find(|f| f.field == "file").or(form.files.first());
    let Some(file) = file else {
        return Err(CallError {
            param: Some("file"),
            ..CallError::bad_request("A batch input upload needs its 'file'.")
        });
    };
    match BatchInput::read(&file.data) {
        Ok(summary) => Ok((None, Some(serde_json::to_string(&summary).unwrap_or_default()))),
        Err(why) => Err(CallError {
            param: Some("file"),
            ..CallError::new(400, "invalid_request_error", "invalid_batch_file", format!("{why}."))
        }),
    }
}
