/* fetch: "GET /fetch?url=URL" fetches URL (taken as it is, up to the end of
 * the request target) and answers with the upstream status, content type
 * and body; 502 if the request fails (for instance when the host is not in
 * the site's outbound_hosts). */
#include "terrafirma.h"

__attribute__((export_name("run"))) void run(void) {
    tf_init_mm();
    char *path;
    size_t path_len;
    hostcall_req_get_path(&path, &path_len, REQUEST_INCOMING);
    const char *url = strstr(path, "?url=");
    if (url == NULL) {
        tf_respond_text(400, "usage: /fetch?url=http://host/path\n");
        return;
    }
    url += 5;

    request_t req = hostcall_req_create("GET", 3, url, strlen(url));
    response_t resp = req == REQUEST_ERROR ? RESPONSE_ERROR : hostcall_req_send(req);
    if (resp == RESPONSE_ERROR) {
        tf_debug("fetch: upstream request failed");
        tf_respond_text(502, "fetch: upstream request failed\n");
        return;
    }

    hostcall_resp_set_response_code(RESPONSE_OUTGOING, (uint16_t)hostcall_resp_get_response_code(resp));
    /* A list from resp_get_header is what resp_set_header takes. */
    GuestSlice *types;
    size_t types_count;
    hostcall_resp_get_header(&types, &types_count, resp, "content-type", 12);
    if (types_count > 0) {
        hostcall_resp_set_header(RESPONSE_OUTGOING, "content-type", 12, types, types_count);
    }
    tf_free_list(types, types_count);
    uint8_t *body;
    size_t body_len;
    hostcall_resp_get_body(&body, &body_len, resp);
    hostcall_resp_set_body(RESPONSE_OUTGOING, body, body_len);
    free(body);
    free(path);
}
