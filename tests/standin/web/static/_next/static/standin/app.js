/* TEST DOUBLE - NOT DIFY, NEVER A DEFAULT. A static asset of the dify-web stand-in. */
window.DIFY_STANDIN_WEB = true;
