// The Realtime voices the API accepts, in its order (switchboard.session_config.VOICES;
// a test keeps the two lists equal).
export const VOICES = ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"];
