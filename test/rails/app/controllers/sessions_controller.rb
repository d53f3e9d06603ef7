# Login with the cookie store alone: the name lives in the signed session
# cookie, nothing in the database.
class SessionsController < ApplicationController
  def new
  end

  def create
    session[:name] = params.require(:name)
    redirect_to root_path
  end

  def destroy
    reset_session
    redirect_to root_path
  end
end
