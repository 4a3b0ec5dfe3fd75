/* A WASI hello world, a command built with clang and wasi-libc:
 *   clang --target=wasm32-wasi --sysroot=/usr -O2 -o hello_wasi.wasm hello_wasi.c
 * `terrafirma run hello_wasi.wasm` prints the greeting; served by the node
 * it is a CGI handler whose output has no header block, so its body. */
#include <stdio.h>

int main(void) {
    printf("Hello, world!\n");
    return 0;
}
