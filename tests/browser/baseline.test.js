// The aiortc baseline server (tests/baseline/server.py) speaks camera-pod's signaling: the same
// page and script work against it, which is what makes it a fair benchmark baseline.

import { describe, it } from 'node:test';
import { cameraVideo, filteredRoundTrip, reconnectsAfterServerRestart } from './scenarios.js';

describe('p2pcamera.js with the aiortc baseline server', () => {
  it('returns the echoed remote track, refuses a second camera, and stops', async (t) => {
    await filteredRoundTrip(t, 'baseline', cameraVideo(t), { greenReplace: false });
  });

  it('shows the raw camera while the server restarts, then the echoed video again', async (t) => {
    await reconnectsAfterServerRestart(t, 'baseline', cameraVideo(t));
  });
});
