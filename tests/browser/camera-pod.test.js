// Browser end to end against camera-pod: headless Chromium with a fake camera loads the demo page
// that camera-pod serves and uses p2pcamera.js exactly as a page would.
//
//   npm --prefix tests/browser ci && npm --prefix tests/browser test
//
// camera-pod comes from P2PCAMERA_CAMERA_POD_BIN (default: the workspace's debug build).

import { describe, it } from 'node:test';
import {
  bodyFiltersPaintThePerson, cameraVideo, fallsBackWhenServerIsDown, filteredRoundTrip, keepsThePodsFilter,
  portraitVideo, reconnectsAfterServerRestart,
} from './scenarios.js';

describe('p2pcamera.js with camera-pod', () => {
  it('returns the filtered remote track, switches filters, refuses a second camera, and stops', async (t) => {
    await filteredRoundTrip(t, 'camera-pod', cameraVideo(t), { greenReplace: true });
  });

  it("shows and keeps the pod's filter until another is picked", async (t) => {
    await keepsThePodsFilter(t, cameraVideo(t));
  });

  it('shows the raw camera while camera-pod restarts, then the filtered video again', async (t) => {
    await reconnectsAfterServerRestart(t, 'camera-pod', cameraVideo(t));
  });

  it('draws the pose over a person and paints her body parts', async (t) => {
    await bodyFiltersPaintThePerson(t, portraitVideo(t));
  });

  it('falls back to the raw camera with a warning and an event when the server is down', async (t) => {
    await fallsBackWhenServerIsDown(t, cameraVideo(t));
  });
});
