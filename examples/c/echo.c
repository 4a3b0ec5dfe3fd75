/* echo: the request's method and target on the first line, then its body.
 *
 *   $ curl -d 'some data' 'http://127.0.0.1:8080/echo/a/b?x=1'
 *   POST /echo/a/b?x=1
 *   some data
 */
#include "terrafirma.h"

__attribute__((export_name("run"))) void run(void) {
    tf_init_mm();
    char *method, *path;
    uint8_t *body;
    size_t method_len, path_len, body_len;
    hostcall_req_get_method(&method, &method_len, REQUEST_INCOMING);
    hostcall_req_get_path(&path, &path_len, REQUEST_INCOMING);
    hostcall_req_get_body(&body, &body_len, REQUEST_INCOMING);

    size_t out_len = method_len + 1 + path_len + 1 + body_len;
    char *out = malloc(out_len);
    char *at = out;
    memcpy(at, method, method_len), at += method_len;
    *at++ = ' ';
    memcpy(at, path, path_len), at += path_len;
    *at++ = '\n';
    memcpy(at, body, body_len);
    hostcall_resp_set_body(RESPONSE_OUTGOING, out, out_len);

    free(out);
    free(body);
    free(path);
    free(method);
}
