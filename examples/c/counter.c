/* counter: adds one to a counter in the site's KV store on each request and
 * answers with the new value. "/counter" counts under the key "count",
 * "/counter/NAME" under "count/NAME" (the query is ignored).
 *
 * The read and the write are two hostcalls: two requests at the same moment
 * may both write the same value. */
#include <stdio.h>

#include "terrafirma.h"

__attribute__((export_name("run"))) void run(void) {
    tf_init_mm();
    char *path;
    size_t path_len;
    hostcall_req_get_path(&path, &path_len, REQUEST_INCOMING);

    /* The key: "count", then the path from its second '/' up to the query. */
    size_t end = strcspn(path, "?");
    size_t start = path_len > 0 ? 1 + strcspn(path + 1, "/?") : 0;
    if (start > end) {
        start = end;
    }
    size_t key_len = 5 + (end - start);
    char *key = malloc(key_len);
    memcpy(key, "count", 5);
    memcpy(key + 5, path + start, end - start);

    unsigned long long count = 0;
    uint8_t *value;
    size_t value_len;
    if (hostcall_kvstore_get(&value, &value_len, key, key_len)) {
        count = strtoull((const char *)value, NULL, 10); /* the host adds a NUL */
        free(value);
    }
    count++;
    char text[24];
    int text_len = snprintf(text, sizeof text, "%llu", count);
    hostcall_kvstore_insert(key, key_len, text, (size_t)text_len);

    text[text_len] = '\n';
    text[text_len + 1] = '\0';
    tf_respond_text(200, text);
    free(key);
    free(path);
}
