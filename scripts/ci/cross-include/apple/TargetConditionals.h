/*
 * Stand-in for the macOS SDK's TargetConditionals.h, for `cargo check` of
 * sai-builder for x86_64/aarch64-apple-darwin without an SDK
 * (scripts/ci/stages/20-cross.sh). ring's C (the only C sai-builder
 * compiles) includes it on Apple targets and reads TARGET_OS_OSX and
 * TARGET_OS_IPHONE from it; the values are the SDK's for macOS. Nothing
 * built with this header is linked or run.
 */
#ifndef SAI_CROSS_TARGET_CONDITIONALS_H
#define SAI_CROSS_TARGET_CONDITIONALS_H
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_TV 0
#define TARGET_OS_SIMULATOR 0
#define TARGET_OS_EMBEDDED 0
#endif
