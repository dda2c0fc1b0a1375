// Replaced by the verifiers.
namespace retort::rewards { int placeholder() { return 0; } }
