/* hello: every request gets 200 and "Hello World!". Nothing is read from
 * the host, so there is no allocator to register. */
#include "terrafirma.h"

__attribute__((export_name("run"))) void run(void) {
    tf_respond_text(200, "Hello World!\n");
}
