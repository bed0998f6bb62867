//! What a task's owner sees of it (`GET /v1/tasks/{id}`, the progress socket's frames).

use crate::store::tasks::Task;

/// A task as its owner sees it.
pub fn view(t: &Task) -> serde_json::Value {
    let mut outputs: serde_json::Value =
        t.outputs.as_deref().and_then(|o| serde_json::from_str(o).ok()).unwrap_or(serde_json::Value::Null);
    // Each archived file is served by the gateway, to the owner only.
    for o in outputs.as_array_mut().into_iter().flatten() {
        if let Some(n) = o["index"].as_i64() {
            o["url"] = format!("/v1/tasks/{}/content/{n}", t.id).into();
        }
    }
    serde_json::json!({
        "id": t.id,
        "object": "task",
        "status": t.status,
        "progress": t.progress,
        "message": t.message,
        "model": t.model,
        "outputs": outputs,
        "error": t.error_kind,
        "charge": t.charge_micros.map(tollgate_base::money::format),
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "expires_at": t.expires_at,
    })
}
