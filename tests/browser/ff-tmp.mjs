// temporary: Chromium Start -> filtered video (p2pcamera:connecting -> p2pcamera:connected)
import { ServerProcess, launchBrowser, recordEvents, restrictIceToLoopback, waitForEvent, writeCameraVideo } from './harness.js';
const video = '/tmp/ff/camera.y4m';
writeCameraVideo(video);
const server = await ServerProcess.start('camera-pod');
const browser = await launchBrowser(video);
await restrictIceToLoopback(browser.context);
const times = [];
try {
  for (let i = 0; i < Number(process.argv[2] ?? 5); i += 1) {
    const page = await browser.context.newPage();
    await recordEvents(page);
    await page.goto(`${server.url}/`);
    await page.click('#start');
    await waitForEvent(page, 'connected', 30000);
    const [a, b] = await page.evaluate(() => ['connecting', 'connected'].map((n) => window.__p2pcameraEvents.find((e) => e.name === n).at));
    times.push(Math.round(b - a));
    await page.click('#stop');
    await page.close();
    await new Promise((r) => setTimeout(r, 300));
  }
} finally {
  await browser.close();
  await server.stop();
}
console.log(process.env.P2PCAMERA_CAMERA_POD_BIN, JSON.stringify(times));
